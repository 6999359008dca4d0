"""Running model-written Python as hostile input: one subprocess per sample, boxed in.

Each call starts a fresh interpreter (``python -I -S``: isolated mode, no site-packages)
in its own session and temporary working directory, with a scrubbed environment and
POSIX resource limits on CPU time, address space, processes, open files and file size.
A wall-clock timeout kills the whole process group, so children cannot outlive it.
An audit hook installed before the untrusted code runs refuses sockets, subprocesses,
forks and ``exec*`` calls (defence in depth: the kit cannot cut the network off at the
OS level without privileges, so the hook is what keeps model code off it).

Used by the code domain's gold judge (:mod:`course_lib.domains.code`) and by pass@k in
evaluation; introduced in ``01_data_curation``.
"""
from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

_MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    Attributes:
        cpu_seconds: CPU time before the kernel kills the process (RLIMIT_CPU).
        wall_seconds: wall-clock time before the whole process group is killed.
        memory_mb: address-space ceiling (RLIMIT_AS).
        max_processes: RLIMIT_NPROC; Linux counts it per user, so a small value forbids
            forking (it is not enforced for root, where the audit hook still refuses forks).
        file_size_mb: largest file the code may write (RLIMIT_FSIZE).
        open_files: most file descriptors open at once (RLIMIT_NOFILE).
    """

    cpu_seconds: int = field(default=2, metadata={"help": "CPU seconds before SIGXCPU/SIGKILL"})
    wall_seconds: float = field(default=5.0, metadata={"help": "wall-clock seconds before the group is killed"})
    memory_mb: int = field(default=512, metadata={"help": "address-space limit in MiB"})
    max_processes: int = field(default=1, metadata={"help": "RLIMIT_NPROC (per user; blocks forking)"})
    file_size_mb: int = field(default=1, metadata={"help": "largest file the code may write, in MiB"})
    open_files: int = field(default=32, metadata={"help": "most open file descriptors"})

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_mb", "max_processes", "file_size_mb", "open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.wall_seconds <= 0:
            raise ValueError(f"SandboxLimits.wall_seconds must be > 0, got {self.wall_seconds}")


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did.

    Attributes:
        returncode: the interpreter's exit status (negative: killed by that signal).
        stdout: captured standard output (truncated to 64 KiB).
        stderr: captured standard error (truncated to 64 KiB).
        timed_out: the wall-clock timeout fired and the process group was killed.
        wall_seconds: how long the run took.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    wall_seconds: float

    @property
    def ok(self) -> bool:
        """True when the program exited normally with status 0."""
        return self.returncode == 0 and not self.timed_out


# The untrusted program runs from a string the guard reads on stdin, after the audit hook
# is in place (hooks cannot be removed). The hook refuses what could reach outside the
# box (network, processes), change files outside the working directory, or inspect the
# harness's frames and objects (to forge its result line); the source is never bound to
# a name, so the result marker cannot be read back from the guard's globals.
_GUARD = r"""
import os, sys
import collections, functools, itertools, json, math, re, string, types  # imported before the hook: some read frames
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork",
            "os.spawn", "os.kill", "os.killpg", "pty.", "ctypes.", "webbrowser.", "urllib.Request",
            "sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_",
            "os.remove", "os.rmdir", "os.rename", "os.replace", "os.link",
            "os.symlink", "os.chmod", "os.chown", "os.truncate", "shutil.rmtree", "os.chdir")
_FRAMES = ("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back")
_HOME = os.getcwd() + os.sep
_OWN_CODE = ("<string>", "<sandboxed>")  # the guard and the harness; solutions and tests are other files
def _hook(event, args, _blocked=_BLOCKED, _frames=_FRAMES, _own=_OWN_CODE, _home=_HOME, _abspath=os.path.abspath):
    if (event.startswith(_blocked) or (event == "object.__getattr__" and args[1] in _frames)
            or (event == "sys._getframe" and args[0].f_code.co_filename in _own)):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and isinstance(args[0], str):
        mode, flags = args[1] or "r", args[2] or 0
        writes = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writes and not (_abspath(args[0]) + os.sep).startswith(_home):
            raise PermissionError("sandbox: writing outside the working directory is not allowed")
sys.addaudithook(_hook)
del _hook
exec(compile(sys.stdin.read(), "<sandboxed>", "exec"), {"__name__": "__main__"})
"""

_OUTPUT_LIMIT = 64 * 1024


def _limit_resources(limits: SandboxLimits) -> None:
    """Set the POSIX limits in the child, between fork and exec."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    memory = limits.memory_mb * _MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    size = limits.file_size_mb * _MIB
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _scrubbed_env(workdir: str) -> dict[str, str]:
    """A minimal environment: no tokens, proxies or Python paths leak into the child."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_python(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run untrusted Python source in a fresh, limited interpreter.

    Args:
        program: the source to run (stdlib only: site-packages are not on the path).
        limits: resource limits; the defaults suit small unit-test programs.

    Returns:
        A :class:`SandboxResult`; the call itself never raises for anything the program does.
    """
    limits = limits or SandboxLimits()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="course_lib_sandbox_") as workdir:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD],
            cwd=workdir,
            env=_scrubbed_env(workdir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so the timeout kills children too
            preexec_fn=lambda: _limit_resources(limits),
        )
        timed_out = False
        try:
            stdout, stderr = proc.communicate(program.encode("utf-8"), timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            stdout, stderr = proc.communicate()
        finally:
            # A child that daemonized inside the group must not outlive the run either.
            _kill_group(proc)
    return SandboxResult(
        returncode=proc.returncode,
        stdout=stdout[:_OUTPUT_LIMIT].decode("utf-8", errors="replace"),
        stderr=stderr[:_OUTPUT_LIMIT].decode("utf-8", errors="replace"),
        timed_out=timed_out,
        wall_seconds=time.monotonic() - start,
    )


# Everything the harness needs is bound inside a closure before the solution runs, so the
# solution cannot swap ``exec`` (in builtins or globals) or edit the outcome it reports.
_TEST_HARNESS = """
def _harness(solution, tests, marker, exec=exec, compile=compile, dumps=__import__("json").dumps,
             write=__import__("os").write, BaseException=BaseException, str=str, type=type):
    namespace = {{"__name__": "solution"}}
    loaded, passed, error = False, (), None  # a tuple: a frame's f_locals cannot grow it
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
        loaded = True
    except BaseException as exc:
        error = type(exc).__name__ + ": " + str(exc)[:200]
    if loaded:
        for test in tests:
            try:
                exec(compile(test, "test.py", "exec"), namespace)
                passed += (True,)
            except BaseException:
                passed += (False,)
    write(1, ("\\n" + marker + dumps({{"loaded": loaded, "passed": list(passed), "error": error}}) + "\\n").encode())
_harness({solution!r}, {tests!r}, {marker!r})
"""


def run_tests(solution: str, tests: list[str], limits: SandboxLimits | None = None) -> dict[str, Any]:
    """Run a solution, then each test snippet, in one sandboxed interpreter.

    Each test is a separate snippet (an ``assert`` line, or a whole ``check`` program)
    run in the solution's namespace; one failing test does not stop the others.

    Args:
        solution: Python source defining the function(s) under test.
        tests: test snippets.
        limits: resource limits for the run.

    Returns:
        ``{"loaded": bool, "passed": list[bool], "error": str | None, "timed_out": bool}``;
        when the run dies (timeout, memory, crash) every test counts as failed.
    """
    marker = f"@@result-{secrets.token_hex(8)}@@"
    program = _TEST_HARNESS.format(solution=solution, tests=list(tests), marker=marker)
    result = run_python(program, limits)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(marker):
            try:
                outcome = json.loads(line[len(marker):])
            except json.JSONDecodeError:
                break
            outcome["passed"] = [bool(p) for p in outcome.get("passed", [])][: len(tests)]
            outcome["passed"] += [False] * (len(tests) - len(outcome["passed"]))
            outcome["timed_out"] = result.timed_out
            return outcome
    reason = "timed out" if result.timed_out else (result.stderr.strip().splitlines() or ["no result"])[-1]
    return {"loaded": False, "passed": [False] * len(tests), "error": reason[:200], "timed_out": result.timed_out}
