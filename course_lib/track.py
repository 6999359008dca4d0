"""Run the track headlessly: execute the notebooks in order with papermill, then report.

Usage (the README's main command wraps this; ``course-track`` is the same command)::

    python -m course_lib.track --profile tiny-cpu --name tiny
    python -m course_lib.track --name tiny --only 00,01      # a subset
    python -m course_lib.track --name tiny --resume          # skip notebooks already done
    python -m course_lib.track --set budgets.sft=20          # override profile values
    python -m course_lib.track --no-solutions                # skip the exercises' worked solutions
    course-track init my-track                               # copy the notebooks into a working folder

The notebooks run are ``./notebooks`` when the current folder has the track (a checkout,
or a folder made by ``course-track init``), else the ones the installed kit ships.
Executed notebooks land in ``runs/<name>/notebooks/``; the resolved profile in
``runs/<name>/profile.yaml``; the report in ``runs/<name>/report.{md,html}``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_json, atomic_write_text, atomic_write_yaml
from .config import DEFAULT_PROFILE, load_profile
from .env import package_versions
from .errors import ConfigError
from .exercises import with_solutions
from .paths import TRACK_FOLDERS, notebooks_dir, track_source_dir
from .report import build_report

STATE_FILE = "track_state.json"


@dataclass
class TrackConfig:
    """What one headless run of the track does.

    Attributes:
        profile: profile name or YAML path.
        name: run name; the run directory is ``<runs_dir>/<name>``.
        runs_dir: parent folder of run directories.
        only: notebook numbers or stems to run (empty: all).
        resume: skip notebooks that completed with the same source and parameters.
        overrides: dotted profile keys to replace, e.g. ``{"budgets.sft": 20}``.
        params: extra notebook parameters, injected where a notebook declares them.
        seed: the ``SEED`` parameter of every notebook.
        solutions: run the worked solutions of each notebook's exercises (``RUN_SOLUTIONS``).
        cell_timeout: seconds one cell may run before the run fails.
        notebooks_dir: folder holding the numbered notebooks.
    """

    profile: str = field(default=DEFAULT_PROFILE, metadata={"help": "profile name or YAML path"})
    name: str = field(default="tiny", metadata={"help": "run name (folder under runs_dir)"})
    runs_dir: Path = field(default=Path("runs"), metadata={"help": "parent folder of run directories"})
    only: list[str] = field(default_factory=list, metadata={"help": "notebook numbers/stems to run; empty = all"})
    resume: bool = field(default=False, metadata={"help": "skip notebooks already completed unchanged"})
    overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "dotted profile overrides"})
    params: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra notebook parameters"})
    seed: int = field(default=0, metadata={"help": "SEED parameter for every notebook"})
    solutions: bool = field(default=True, metadata={"help": "run the exercises' worked solutions"})
    cell_timeout: int = field(default=3600, metadata={"help": "seconds one cell may run", "min": 1})
    notebooks_dir: Path = field(default_factory=lambda: default_notebooks_dir(),
                                metadata={"help": "folder of the numbered notebooks"})

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"run name must be a plain folder name, got {self.name!r}", key="name")
        if self.cell_timeout < 1:
            raise ConfigError("cell_timeout must be at least 1 second", key="cell_timeout")
        if self.seed < 0:
            raise ConfigError(f"expected a seed >= 0, got {self.seed}", key="seed")
        self.runs_dir, self.notebooks_dir = Path(self.runs_dir), Path(self.notebooks_dir)

    @property
    def run_dir(self) -> Path:
        return (self.runs_dir / self.name).resolve()


class TrackFailure(RuntimeError):
    """A notebook failed; carries the notebook, the failing cell's source and the error."""

    def __init__(self, notebook: str, cell_index: int | None, source: str, error: str, output: Path):
        self.notebook, self.cell_index, self.source, self.error, self.output = notebook, cell_index, source, error, output
        super().__init__(self.describe())

    def describe(self) -> str:
        bar = "-" * 72
        where = f"cell {self.cell_index}" if self.cell_index is not None else "a cell"
        return (
            f"notebook {self.notebook} failed in {where}:\n{bar}\n{self.source.rstrip()}\n{bar}\n"
            f"{self.error}\nExecuted notebook with the traceback: {self.output}"
        )


def default_notebooks_dir() -> Path:
    """``./notebooks`` when the current folder holds the track, else the kit's own notebooks."""
    here = Path.cwd() / "notebooks"
    return here if track_notebooks(here) else notebooks_dir()


def track_notebooks(folder: Path) -> list[Path]:
    """The numbered notebooks of the track (``NN_name.ipynb``, or ``NNb_name`` for a part two), in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]*_*.ipynb") if p.stem.split("_", 1)[0][:2].isdigit())


def select_notebooks(all_notebooks: list[Path], only: list[str]) -> list[Path]:
    """Filter by number (``02``, ``03b``) or stem (``02_sft``); unknown selectors are an error.

    A number selects its part two as well: ``03`` runs ``03_...`` and ``03b_...``.
    """
    if not only:
        return all_notebooks
    chosen = []
    for sel in only:
        number = sel.zfill(2) if sel.isdigit() else sel
        matches = [p for p in all_notebooks
                   if p.stem == sel or p.stem.split("_", 1)[0] == number
                   or (sel.isdigit() and p.stem.split("_", 1)[0].rstrip("abcdefgh") == number)]
        if not matches:
            known = ", ".join(p.stem for p in all_notebooks)
            raise ConfigError(f"no notebook matches {sel!r}; expected one of: {known}", key="only")
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen)


def _fingerprint(notebook: Path, params: dict[str, Any]) -> str:
    h = hashlib.sha256(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {"notebooks": {}}


def _declared_parameters(notebook: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def _failure_from(exc: Exception, notebook: Path, output: Path) -> TrackFailure:
    """Find the failing cell's source in the executed notebook papermill saved."""
    import nbformat

    error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    index, source = None, "(source not found)"
    if output.is_file():
        nb = nbformat.read(output, as_version=4)
        code_index = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            code_index += 1
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                index, source = code_index, cell.source
                break
    return TrackFailure(notebook.stem, index, source, error, output)


def run_track(cfg: TrackConfig, log=print) -> dict[str, Any]:
    """Execute the selected notebooks in order, then write the report.

    Args:
        cfg: what to run.
        log: where progress lines go.

    Returns:
        The track state (per-notebook status and seconds) with the report paths.

    Raises:
        TrackFailure: a notebook failed; the run stops there.
        ConfigError: a bad profile, override or selection.
    """
    import nbformat
    import papermill

    run_dir = cfg.run_dir
    # Everything the user chose is checked before the run directory gets its first file.
    profile = load_profile(cfg.profile, cfg.overrides)
    notebooks = select_notebooks(track_notebooks(cfg.notebooks_dir), cfg.only)
    if not notebooks:
        raise ConfigError(f"no numbered notebooks found in {cfg.notebooks_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    profile_file = run_dir / "profile.yaml"
    atomic_write_yaml(profile_file, {k: v for k, v in profile.to_dict().items() if k != "source"})
    base_params = {"PROFILE": str(profile_file), "RUN_DIR": str(run_dir), "SEED": cfg.seed,
                   "RUN_SOLUTIONS": cfg.solutions, **cfg.params}
    state = _load_state(run_dir)
    state["profile"] = profile.name
    state["versions"] = package_versions()
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(exist_ok=True)
    for i, notebook in enumerate(notebooks, 1):
        declared = _declared_parameters(notebook)
        params = {k: v for k, v in base_params.items() if k in declared}
        fingerprint = _fingerprint(notebook, {**params, "profile": profile.to_dict() | {"source": ""}})
        previous = state["notebooks"].get(notebook.stem, {})
        output = out_dir / notebook.name
        if cfg.resume and previous.get("status") == "done" and previous.get("fingerprint") == fingerprint and output.is_file():
            log(f"[{i}/{len(notebooks)}] {notebook.stem}: already done, skipped (--resume)")
            continue
        log(f"[{i}/{len(notebooks)}] {notebook.stem}: running")
        started = time.time()
        state["notebooks"][notebook.stem] = {"status": "running", "fingerprint": fingerprint}
        atomic_write_json(run_dir / STATE_FILE, state)
        source = nbformat.read(notebook, as_version=4)
        if params.get("RUN_SOLUTIONS"):
            source = with_solutions(source)
        try:
            papermill.execute_notebook(
                source, str(output), parameters=params, cwd=str(cfg.notebooks_dir.resolve().parent),
                kernel_name="python3", progress_bar=sys.stderr.isatty(), execution_timeout=cfg.cell_timeout,
                request_save_on_cell_execute=True,
                # The kernel's own log is noise here: a warning that localhost TCP is unencrypted, and, when
                # jupyter_client's SIGINT-before-shutdown lands inside a message handler, an ERROR line
                # "KeyboardInterrupt caught in kernel". Cells' warnings and errors still reach the notebook.
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
        except papermill.PapermillExecutionError as exc:
            state["notebooks"][notebook.stem].update(status="failed", seconds=round(time.time() - started, 1))
            atomic_write_json(run_dir / STATE_FILE, state)
            build_report(run_dir, f"Run {cfg.name} ({profile.name})", state)
            raise _failure_from(exc, notebook, output) from None
        _stamp_versions(output, profile.name)
        seconds = round(time.time() - started, 1)
        state["notebooks"][notebook.stem] = {"status": "done", "fingerprint": fingerprint, "seconds": seconds}
        atomic_write_json(run_dir / STATE_FILE, state)
        log(f"[{i}/{len(notebooks)}] {notebook.stem}: done in {seconds:.0f}s")
    paths = build_report(run_dir, f"Run {cfg.name} ({profile.name})", state)
    state["report"] = {k: str(v) for k, v in paths.items()}
    return state


def _stamp_versions(executed: Path, profile: str) -> None:
    """Record in the executed notebook's metadata the package versions and the profile it ran with."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata["course_lib"] = {"profile": profile, "versions": package_versions()}
    atomic_write_text(executed, nbformat.writes(nb))


def _parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}", key=flag)
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {item!r}: the value is not a YAML scalar, list or mapping; "
                              "quote it to pass text", key=key) from None
    return out


def init_working_copy(target: str | Path, log=print) -> Path:
    """Copy the kit's notebooks and data cards into ``target``, a folder to work and run in.

    A file already in ``target`` is kept, never overwritten: a learner's edited notebook
    survives a second ``init``.

    Args:
        target: the working folder (created if needed).
        log: where the summary goes.

    Returns:
        The folder's ``notebooks/``.
    """
    import shutil

    target = Path(target)
    source = track_source_dir()
    copied = kept = 0
    for folder in TRACK_FOLDERS:
        for path in sorted((source / folder).rglob("*")):
            if not path.is_file() or ".ipynb_checkpoints" in path.parts or "__pycache__" in path.parts:
                continue
            dest = target / folder / path.relative_to(source / folder)
            if dest.exists():
                kept += 1
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            copied += 1
    log(f"{target}: {copied} files copied, {kept} already there and kept")
    log(f"Next: cd {target} && course-track        (the whole track, headless)")
    log(f"  or: cd {target} && jupyter lab notebooks/00_setup.ipynb")
    return target / "notebooks"


def _init_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="course-track init",
                                     description="Copy the track's notebooks and data cards into a working folder.")
    parser.add_argument("folder", help="the working folder (created if needed)")
    init_working_copy(parser.parse_args(argv).folder)
    return 0


def _doctor_main(argv: list[str]) -> int:
    from .preflight import doctor, format_report, machine_facts

    parser = argparse.ArgumentParser(prog="course-track doctor",
                                     description="Check this machine: versions, GPU, bf16, 4-bit, memory, disk, hub; "
                                                 "then whether each profile fits.")
    parser.add_argument("--profile", action="append", help="check only this profile (name or YAML path; repeatable)")
    parser.add_argument("--runs-dir", default="runs", help="where runs go (its disk's free space counts)")
    parser.add_argument("--no-hub-check", action="store_true", help="do not try to reach the Hugging Face hub")
    args = parser.parse_args(argv)
    facts = machine_facts(args.runs_dir, check_hub=not args.no_hub_check)
    print(format_report(facts, doctor(facts, args.profile)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``course-track``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["init"]:
        return _init_main(argv[1:])
    if argv[:1] == ["doctor"]:
        return _doctor_main(argv[1:])
    parser = argparse.ArgumentParser(prog="course-track", description=__doc__.split("\n\n")[0],
                                     epilog="course-track init FOLDER copies the notebooks into a working folder; "
                                            "course-track doctor checks this machine against the profiles.")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name or YAML path (default: %(default)s)")
    parser.add_argument("--name", default="tiny", help="run name; outputs go to <runs-dir>/<name> (default: %(default)s)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of runs (default: %(default)s)")
    parser.add_argument("--only", default="", help="comma-separated notebook numbers or stems, e.g. 00,01")
    parser.add_argument("--resume", action="store_true", help="skip notebooks already completed unchanged")
    parser.add_argument("--seed", type=int, default=0, help="SEED parameter of every notebook")
    parser.add_argument("--no-solutions", action="store_true", help="do not run the exercises' worked solutions")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a profile value, e.g. budgets.sft=20")
    parser.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE", help="extra notebook parameter")
    parser.add_argument("--notebooks-dir", default=None, help="folder of the numbered notebooks (default: ./notebooks, else the kit's)")
    parser.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        cfg = TrackConfig(
            profile=args.profile, name=args.name, runs_dir=Path(args.runs_dir),
            only=[s.strip() for s in args.only.split(",") if s.strip()], resume=args.resume,
            overrides=_parse_assignments(args.overrides, "--set"), params=_parse_assignments(args.params, "--param"),
            seed=args.seed, solutions=not args.no_solutions, cell_timeout=args.cell_timeout,
            **({"notebooks_dir": Path(args.notebooks_dir)} if args.notebooks_dir else {}),
        )
        state = run_track(cfg)
    except (ConfigError, TrackFailure) as exc:
        print(f"\ntrack stopped: {exc}", file=sys.stderr)
        return 1
    print(f"\nExecuted notebooks: {cfg.run_dir / 'notebooks'}")
    print(f"Report: {state['report']['markdown']}\n        {state['report']['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
