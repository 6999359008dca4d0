"""Profiles: one typed, validated config naming the model, its precision, LoRA and the budgets.

A profile is a YAML file (``course_lib/profiles/<name>.yaml`` or any path) loaded into
:class:`Profile`. Every field has a type and a one-line help; unknown keys, wrong types and
out-of-range values are rejected with the file and the dotted key. Introduced in ``00_setup``.
"""
from __future__ import annotations

import codecs
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .paths import PACKAGE_DIR

PROFILES_DIR = PACKAGE_DIR / "profiles"
DEFAULT_PROFILE = "tiny-cpu"
TINY_BASE = "tiny-base"
"""Model name that selects the embedded tiny base built by :mod:`course_lib.tiny_base`."""


def _meta(help: str, **kw: Any) -> dict[str, Any]:
    return {"help": help, **kw}


@dataclass
class ModelSettings:
    """Which model to load and how.

    Attributes:
        name: hub id, local folder, or ``tiny-base`` for the embedded model.
        dtype: weights dtype for the unquantized parts.
        trust_remote_code: run code shipped with a hub model (off unless you trust it).
        max_seq_length: longest sequence (prompt + response) a stage trains on.
    """

    name: str = field(default=TINY_BASE, metadata=_meta("hub id, local folder, or 'tiny-base'"))
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="float32", metadata=_meta("dtype of the unquantized weights; auto: bf16 on GPUs with native bf16, else fp16, fp32 on CPU")
    )
    trust_remote_code: bool = field(default=False, metadata=_meta("allow code shipped with the model to run"))
    max_seq_length: int = field(default=256, metadata=_meta("longest training sequence in tokens", min=16))


@dataclass
class QuantizationSettings:
    """4-bit loading through bitsandbytes (QLoRA)."""

    load_in_4bit: bool = field(default=False, metadata=_meta("load the base in 4 bits (bitsandbytes)"))
    quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata=_meta("4-bit data type"))
    double_quant: bool = field(default=True, metadata=_meta("also quantize the quantization constants"))
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata=_meta("dtype the 4-bit matmuls compute in; auto as for model.dtype")
    )


@dataclass
class LoraSettings:
    """LoRA adapter shape, applied by every training stage."""

    enabled: bool = field(default=True, metadata=_meta("train a LoRA adapter instead of all weights"))
    r: int = field(default=16, metadata=_meta("adapter rank", min=1))
    alpha: int = field(default=32, metadata=_meta("adapter scaling numerator (scale = alpha / r)", min=1))
    dropout: float = field(default=0.05, metadata=_meta("dropout on the adapter input", min=0.0, max=0.9))
    target_modules: str = field(default="all-linear", metadata=_meta("modules to adapt ('all-linear' or a comma list)"))
    reward: bool = field(default=True, metadata=_meta(
        "the reward model (and PPO's value model, started from it) trains an adapter too; false trains all its weights"))


@dataclass
class TrainingSettings:
    """Settings shared by the training stages."""

    gradient_checkpointing: bool = field(default=False, metadata=_meta("recompute activations to save memory"))
    optim: str = field(default="adamw_torch", metadata=_meta("optimizer name understood by transformers"))
    learning_rate: float = field(default=2e-4, metadata=_meta("peak learning rate of the LoRA stages", above=0.0, max=1.0))
    per_device_batch_size: int = field(default=8, metadata=_meta("sequences per device per step", min=1))
    gradient_accumulation_steps: int = field(default=1, metadata=_meta("steps accumulated per update", min=1))
    report_to: str = field(default="none", metadata=_meta("experiment tracker: none, tensorboard, trackio, wandb"))


@dataclass
class DataSettings:
    """How much seed data the domains generate, and how flawed its demonstrations are.

    The profile's ``data`` section; also what notebook 01's curation builds from.

    Attributes:
        sft_per_domain: SFT demonstrations per domain (code includes the stdlib ones).
        prefs_per_domain: preference pairs per domain.
        eval_per_domain: held-out evaluation prompts per domain.
        stdlib_functions: standard-library functions among the code SFT demos.
        humaneval: HumanEval problems in the evaluation-only set (None: all 164).
        flaw_scale: multiplies every domain's documented flaw rates (0: clean demonstrations).
        planted_share: share of records per domain planted with each curation problem.
    """

    sft_per_domain: int = field(default=300, metadata=_meta("SFT demonstrations per domain", min=10))
    prefs_per_domain: int = field(default=300, metadata=_meta("preference pairs per domain", min=10))
    eval_per_domain: int = field(default=50, metadata=_meta("held-out evaluation prompts per domain", min=10))
    stdlib_functions: int | None = field(default=None, metadata=_meta("stdlib functions among the code SFT demos (None: a tenth)", min=0))
    humaneval: int | None = field(default=None, metadata=_meta("HumanEval problems kept (None: all 164)", min=1, max=164))
    flaw_scale: float = field(default=1.0, metadata=_meta("multiplies each domain's documented flaw rates (0: clean demos)", min=0.0, max=1.5))
    planted_share: float = field(default=0.02, metadata=_meta("share of records planted per curation problem kind", min=0.0, max=0.1))

    def __post_init__(self) -> None:
        for name in ("sft_per_domain", "prefs_per_domain", "eval_per_domain"):
            if getattr(self, name) < 10:
                raise ConfigError(f"expected at least 10, got {getattr(self, name)}", key=f"data.{name}")
        if self.stdlib_functions is None:
            self.stdlib_functions = self.sft_per_domain // 10
        if not 0 <= self.stdlib_functions <= self.sft_per_domain // 2:
            raise ConfigError(f"expected a value in [0, sft_per_domain / 2], got {self.stdlib_functions}",
                              key="data.stdlib_functions")
        if self.humaneval is not None and not 1 <= self.humaneval <= 164:
            raise ConfigError(f"expected None or a value in [1, 164], got {self.humaneval}", key="data.humaneval")
        if not 0 <= self.flaw_scale <= 1.5:
            raise ConfigError(f"expected a value in [0, 1.5], got {self.flaw_scale}", key="data.flaw_scale")
        if not 0 <= self.planted_share <= 0.1:
            raise ConfigError(f"expected a value in [0, 0.1], got {self.planted_share}", key="data.planted_share")

    @classmethod
    def from_any(cls, data: "DataSettings | dict[str, Any] | None") -> "DataSettings":
        """A DataSettings from itself, a dict of some of its fields (unknown keys rejected), or None."""
        if data is None:
            return cls()
        if isinstance(data, cls):
            return data
        return from_mapping(cls, dict(data), prefix="data.")


@dataclass
class BudgetSettings:
    """Optimizer-step budgets of each stage; notebooks read them unless MAX_STEPS overrides."""

    sft: int = field(default=200, metadata=_meta("SFT optimizer steps", min=1))
    reward: int = field(default=120, metadata=_meta("reward-model optimizer steps", min=1))
    ppo: int = field(default=40, metadata=_meta("PPO iterations (rollout + update)", min=1))
    dpo: int = field(default=150, metadata=_meta("DPO optimizer steps", min=1))


@dataclass
class Profile:
    """A whole profile: the model, precision, LoRA, data sizes and step budgets."""

    name: str = field(default=DEFAULT_PROFILE, metadata=_meta("profile name, shown in reports"))
    description: str = field(default="", metadata=_meta("one line on what the profile is for"))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=_meta("where to train; auto picks CUDA if present"))
    model: ModelSettings = field(default_factory=ModelSettings, metadata=_meta("the model"))
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings, metadata=_meta("4-bit loading"))
    lora: LoraSettings = field(default_factory=LoraSettings, metadata=_meta("LoRA adapter"))
    training: TrainingSettings = field(default_factory=TrainingSettings, metadata=_meta("shared trainer settings"))
    data: DataSettings = field(default_factory=DataSettings, metadata=_meta("seed data sizes and flaw scale"))
    budgets: BudgetSettings = field(default_factory=BudgetSettings, metadata=_meta("per-stage step budgets"))
    source: str = field(default="", metadata=_meta("file the profile was loaded from (set by the loader)"))

    def __post_init__(self) -> None:
        if self.quantization.load_in_4bit and not self.lora.enabled:
            raise ConfigError("4-bit weights cannot be trained directly; set lora.enabled: true", file=self.source or None, key="lora.enabled")
        if self.quantization.load_in_4bit and not self.lora.reward:
            raise ConfigError("4-bit weights cannot be trained directly, and lora.reward: false trains every weight of the "
                              "reward model; set lora.reward: true", file=self.source or None, key="lora.reward")

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data (what ``config.yaml`` files hold)."""
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, f: dataclasses.Field, file: str | None, key: str) -> Any:
    """Check one scalar against its annotation and range; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", file=file, key=key)
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        tp = args[0]
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {value!r}", file=file, key=key)
    else:
        ok = isinstance(value, tp)
    if not ok:
        hint = _number_as_text_hint(value) if tp is float and isinstance(value, str) else ""
        raise ConfigError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}", file=file, key=key)
    bounds = (("min", ">=", lambda v, b: v >= b), ("max", "<=", lambda v, b: v <= b),
              ("above", ">", lambda v, b: v > b), ("below", "<", lambda v, b: v < b))
    for name, sign, holds in bounds:
        bound = f.metadata.get(name)
        if bound is not None and not holds(value, bound):
            raise ConfigError(f"expected a value {sign} {bound}, got {value!r}", file=file, key=key)
    return value


def _number_as_text_hint(text: str) -> str:
    """How to write a number that YAML read as text: YAML 1.1 (PyYAML) wants a dot and a signed exponent."""
    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    mantissa, exponent = f"{number:e}".split("e")
    mantissa = mantissa.rstrip("0")
    mantissa += "0" if mantissa.endswith(".") else ""
    return f" (YAML reads {text} as text; write {mantissa}e{exponent})"


def check_fields(config: Any) -> None:
    """Check every field of a config dataclass against its annotation and its range metadata.

    Range metadata: ``min`` and ``max`` (inclusive), ``above`` and ``below`` (exclusive).
    Stage configs call it first in ``__post_init__``, so a bad value stops with the field
    named, as a bad profile value does; rules that tie fields together follow it.

    Raises:
        ConfigError: naming the field and what was expected.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        _check_value(getattr(config, f.name), hints[f.name], f, None, f.name)


def from_mapping(cls: type, data: Any, *, file: str | None = None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, validating keys, types and ranges.

    Args:
        cls: a dataclass whose fields carry ``help`` (and optional ``min``/``max``) metadata.
        data: the mapping read from YAML.
        file: the file it came from, named in errors.
        prefix: dotted key of ``data`` inside the file, named in errors.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of settings, got {type(data).__name__}", file=file, key=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"unknown setting; expected one of: {', '.join(sorted(fields))}", file=file, key=key)
    kwargs = {}
    for name, value in data.items():
        tp, key = hints[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_mapping(tp, value, file=file, prefix=f"{key}.")
        else:
            kwargs[name] = _check_value(value, tp, fields[name], file, key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if exc.file is not None:
            raise
        # A rule that ties fields together names its key within the config; DataSettings' keys
        # are already the profile's full ones ('data.x').
        key = exc.key if exc.key is None or exc.key.startswith(prefix) else f"{prefix}{exc.key}"
        raise ConfigError(exc.message, file=file, key=key) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error.

    PyYAML keeps the last value silently, so a setting edited in one place and left in another
    would quietly win or lose.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            token = (key_node.tag, key_node.value)
            if token in first_lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key_node.value!r} is given twice (first at line {first_lines[token]})",
                    key_node.start_mark)
            first_lines[token] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file the kit reads (a profile, a pipeline, a stage's recorded config).

    Args:
        path: the file.

    Returns:
        The parsed document (None for an empty file).

    Raises:
        ConfigError: naming the file and the line, when the file is not UTF-8 text or not
            valid YAML, or gives a key twice in one mapping.
    """
    raw = Path(path).read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError("the file is UTF-16 encoded; expected UTF-8 (save it as UTF-8)", file=path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"not valid UTF-8 at line {line} (bytes {raw[err.start:err.start + 4]!r}); "
                          "expected UTF-8 text (save the file as UTF-8)", file=path) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line = mark.line + 1
        else:  # the reader's errors (control characters) carry a character position instead
            line = text.count("\n", 0, getattr(exc, "position", 0)) + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML at line {line}: {problem}", file=path) from None


def profile_path(name_or_path: str | Path) -> Path:
    """Resolve a profile name (``tiny-cpu``) or a YAML path to an existing file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError("profile file does not exist", file=candidate)
        return candidate
    named = PROFILES_DIR / f"{name_or_path}.yaml"
    if not named.is_file():
        known = ", ".join(available_profiles())
        raise ConfigError(f"no profile named {str(name_or_path)!r}; expected one of: {known}, or a path to a .yaml file", file=named)
    return named


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the kit."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE, overrides: dict[str, Any] | None = None) -> Profile:
    """Load and validate a profile.

    Args:
        name_or_path: a shipped profile name (``tiny-cpu``, ``gpu-qlora``) or a YAML file.
        overrides: dotted keys to replace after loading, e.g. ``{"budgets.sft": 10}``.

    Returns:
        The validated :class:`Profile`.

    Raises:
        ConfigError: naming the file, the key and what was expected.
    """
    path = profile_path(name_or_path)
    data = read_yaml(path)
    if data is None:
        raise ConfigError("no settings in the file; expected a mapping of profile settings ('{}' takes every default)",
                          file=path)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of profile settings, got {type(data).__name__}", file=path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for depth, part in enumerate(parents, start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parents[:depth])
                raise ConfigError(f"cannot set {dotted!r}: {section!r} is a setting ({node!r}), not a section",
                                  file=path, key=section)
        node[leaf] = value
    data.setdefault("name", path.stem)
    data["source"] = str(path)
    return from_mapping(Profile, data, file=str(path))
