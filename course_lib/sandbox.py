"""Running model-written Python as hostile input: one boxed subprocess per sample.

Each call starts a fresh interpreter (``python -I -S``: isolated mode, no site-packages)
in its own session and temporary working directory, with a scrubbed environment and
POSIX resource limits on CPU time, address space, processes, open files and file size.
Two kinds of walls stand around it (``docs/sandbox.md`` says what each one stops):

- **The operating system**, wherever it offers the means (probed once per process):
  a network namespace (no network at all, not even the host's loopback), a mount
  namespace whose whole filesystem is read-only except the private working directory
  (``/proc`` and the user's home hidden), a user namespace (to build those without
  privileges), the ``nobody`` user when the kit runs as root, and a seccomp filter that
  refuses sockets, new processes and threads, signals, ptrace and mount calls.
- **An audit hook** in the child, installed before the untrusted code runs: it refuses
  sockets, processes, frame inspection, writes outside the working directory and the
  modules that reach around it. CPython's docs say a hook is no sandbox; it is the
  second layer, and the only one where the OS offers nothing.

Every result says which layers were in force (``isolation``); :func:`isolation` tells
before any run, and ``COURSE_LIB_SANDBOX_ISOLATION=hook`` turns the OS layers off.

A small helper process (the broker), started on the first run, forks every sandbox: forking
from a process that holds a model would copy its page tables each time, which costs more than
the run. It reads the output through bounded buffers until a hard deadline, then kills the
process group. :func:`run_tests` reads its verdict from a pipe of its own, never
from the output; a test shaped ``assert <call> == <literal>`` (``!=``, ``is``,
``is not``) is decided in the parent, which compares the returned value, sent back as
plain data, with the expected one, so an object with a forged ``__eq__`` cannot pass it.

Used by the code domain's gold judge (:mod:`course_lib.domains.code`) and by pass@k in
evaluation; introduced in ``01_data_curation``.
"""
from __future__ import annotations

import ast
import base64
import ctypes
import functools
import json
import operator
import os
import platform
import pwd
import resource
import secrets
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

_MIB = 1024 * 1024
ISOLATION_ENV = "COURSE_LIB_SANDBOX_ISOLATION"
"""Environment variable: ``auto`` (default: every OS layer that works here) or ``hook``."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    Attributes:
        cpu_seconds: CPU time before the kernel kills the process (RLIMIT_CPU).
        wall_seconds: wall-clock time before the whole process group is killed.
        memory_mb: address-space ceiling (RLIMIT_AS).
        max_processes: RLIMIT_NPROC; Linux counts it per user, so a small value forbids
            forking (it is not enforced for root; the sandbox then runs as ``nobody``
            where it can, and the seccomp filter and audit hook refuse forks anyway).
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
        stdout: captured standard output: its first and last 32 KiB when longer.
        stderr: captured standard error, kept the same way.
        timed_out: the wall-clock timeout fired and the process group was killed.
        wall_seconds: how long the run took.
        isolation: the layers in force, e.g. ``("network-namespace", ..., "audit-hook")``.
        output_bytes_dropped: bytes of stdout and stderr read but not kept.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    wall_seconds: float
    isolation: tuple[str, ...] = ()
    output_bytes_dropped: int = 0

    @property
    def ok(self) -> bool:
        """True when the program exited normally with status 0."""
        return self.returncode == 0 and not self.timed_out


# --- the audit hook: the layer inside the child ---------------------------------------------

# The untrusted program runs from a string the guard reads on stdin, after the audit hook
# is in place (hooks cannot be removed). The hook refuses what could reach outside the
# box (network, processes, files outside the working directory), every way to a frame
# object (a frame leads to the harness's locals: its secret and its results), and the
# modules that get around it: ``_posixsubprocess`` forks without an audit event, a
# sub-interpreter starts without the hook. It uses only values bound when it is defined
# and methods of str and list, which no Python code can patch, and nothing can reach it.
_GUARD = r"""
import os, sys
import collections, functools, itertools, json, math, re, string, types  # imported before the hook: some read frames
import _imp, _signal, posix
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork",
            "os.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "pty.", "ctypes.", "webbrowser.",
            "urllib.Request", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
            "sys.setprofile", "gc.get_", "code.__new__", "cpython.PyInterpreterState_New",
            "os.link", "os.symlink", "os.chown", "os.truncate", "os.setxattr", "os.removexattr",
            "shutil.rmtree", "os.chdir")
_MODULES = frozenset(("_posixsubprocess", "_signal", "_imp", "posix", "_xxsubinterpreters", "_xxinterpchannels",
                      "_testcapi", "_testinternalcapi", "_testmultiphase"))
_FRAMES = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"))
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.mkdir": ((0,), (2,)), "os.chmod": ((0,), (2,)), "os.utime": ((0,), (3,)),  # (paths, dir_fds)
                "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.rename": ((0, 1), (2, 3))}
_HOME = os.path.realpath(os.getcwd())

def _refusal(name):
    def refuse(*args, **kwargs):
        raise PermissionError("sandbox: " + name + " is not allowed")
    return refuse

def _gate(create=_imp.create_builtin, refused=_MODULES, spec_of=types.SimpleNamespace, type=type, str=str,
          BaseException=BaseException, deny=PermissionError):
    # importlib re-creates a built-in module (a fresh _signal or posix, or _posixsubprocess
    # where it is compiled in) without an audit event; this gate refuses those. Being a
    # generator, it keeps the real create_builtin in a frame out of reach (gi_frame is refused).
    outcome = None
    while True:
        spec = yield outcome
        try:
            name = spec.name
            if type(name) is not str or name in refused:
                raise deny("sandbox: creating the module " + str(name) + " is not allowed")
            outcome = create(spec_of(name=name)), None
        except BaseException as exc:
            outcome = None, exc

_send = _gate().send
_send(None)

def _create_builtin(spec, send=_send):
    module, error = send(spec)
    if error is not None:
        raise error
    return module

def _normal(path, home=_HOME):
    parts = []  # lexical: the working directory starts empty and symlinks cannot be made
    for part in (path if path[:1] == "/" else home + "/" + path).split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)

def _hook(event, args, blocked=_BLOCKED, modules=_MODULES, frames=_FRAMES, write_flags=_WRITES,
          path_events=_PATH_EVENTS, home=_HOME + "/", normal=_normal, encoding=sys.getfilesystemencoding(),
          type=type, str=str, bytes=bytes, int=int, deny=PermissionError, hide_frame=ValueError):
    if event.startswith(blocked):
        raise deny("sandbox: " + event + " is not allowed")
    if event.startswith("sys._getframe"):  # ValueError: namedtuple and typing then fall back quietly
        raise hide_frame("sandbox: " + event + " is not allowed")
    if event == "object.__getattr__" and args[1] in frames:
        raise deny("sandbox: frame objects are not allowed")
    if event == "import" and args[0] in modules:
        raise deny("sandbox: importing " + args[0] + " is not allowed")
    if event == "open":
        if type(args[0]) is int:
            return  # an already open descriptor
        paths, mode = (args[0],), args[1]
        writes = (args[2] or 0) & write_flags or (
            mode is not None and ("w" in mode or "a" in mode or "x" in mode or "+" in mode))
    elif event in path_events:
        positions, descriptors = path_events[event]
        for i in descriptors:
            if args[i] not in (None, -1):
                raise deny("sandbox: " + event + " relative to a descriptor is not allowed")
        paths, mode, writes = [args[i] for i in positions], "", True
    else:
        return
    for path in paths:
        if type(path) is bytes:
            path = path.decode(encoding, "surrogateescape")
        elif type(path) is not str:
            raise deny("sandbox: " + event + " takes a str or bytes path here")
        path = normal(path)
        inside = (path + "/").startswith(home)
        if path.startswith(("/proc/", "/dev/fd/")) or path == "/proc" or path == "/dev/fd":
            raise deny("sandbox: /proc and /dev/fd are not allowed")  # /proc/self/mem reads this process
        if writes and not inside and path != "/dev/null":
            raise deny("sandbox: writing outside the working directory is not allowed")
        if mode is None and not inside:  # os.open: a directory descriptor would get around these checks
            raise deny("sandbox: os.open outside the working directory is not allowed")

# Calls without an audit event: a signal handler is handed the interrupted frame, and
# mknod and mkfifo create files. The originals stay reachable only through a fresh module.
for _module, _name in ((_signal, "signal"), (posix, "mknod"), (posix, "mkfifo"), (os, "mknod"), (os, "mkfifo")):
    if hasattr(_module, _name):
        setattr(_module, _name, _refusal(_name))
_imp.create_builtin = _create_builtin
sys.addaudithook(_hook)
del _hook, _normal, _gate, _send, _create_builtin, _refusal, _module, _name
exec(compile(sys.stdin.read(), "<sandboxed>", "exec"), {"__name__": "__main__"})
"""


# --- the operating-system layers ------------------------------------------------------------

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE, _MS_NOSUID, _MS_NODEV = 0x1000, 0x2000, 0x4000, 0x40000, 0x2, 0x4
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _AT_RECURSIVE, _AT_FDCWD = 0x1, 0x2, 0x8000, -100
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new syscalls share one table)
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

# Syscalls the seccomp filter refuses (EPERM): sockets, new processes and threads, signals
# and ptrace to other processes, namespaces and mounts, and kernel interfaces that get
# around the rest (io_uring can open sockets; bpf and perf are large attack surfaces).
# Installing a signal handler (rt_sigaction with a new action) is refused as well: a
# Python handler is handed the interrupted frame, and through it the harness's locals.
_SECCOMP = {
    "x86_64": {"arch": 0xC000003E, "rt_sigaction": 13, "blocked": (
        41, 53,  # socket, socketpair
        56, 57, 58, 435,  # clone, fork, vfork, clone3
        101, 310, 311, 438,  # ptrace, process_vm_readv, process_vm_writev, pidfd_getfd
        62, 200, 234, 424, 129, 297,  # kill, tkill, tgkill, pidfd_send_signal, rt_sigqueueinfo, rt_tgsigqueueinfo
        272, 308, 165, 166, 155, 161,  # unshare, setns, mount, umount2, pivot_root, chroot
        442, 428, 429, 430, 431, 432, 433,  # mount_setattr, open_tree, move_mount, fsopen, fsconfig, fsmount, fspick
        321, 298, 323, 425, 426, 427, 250, 248, 249,  # bpf, perf_event_open, userfaultfd, io_uring_*, keyctl, add_key, request_key
    )},
    "aarch64": {"arch": 0xC00000B7, "rt_sigaction": 134, "blocked": (
        198, 199,
        220, 435,
        117, 270, 271, 438,
        129, 130, 131, 424, 138, 240,
        97, 268, 40, 39, 41, 51,
        442, 428, 429, 430, 431, 432, 433,
        280, 241, 282, 425, 426, 427, 219, 217, 218,
    )},
}


@dataclass(frozen=True)
class _Plan:
    """Which OS layers a run sets up; the audit hook and rlimits are always there."""

    user_namespace: bool = False
    network_namespace: bool = False
    read_only: bool = False
    unprivileged_user: bool = False
    seccomp: bool = False

    @property
    def layers(self) -> tuple[str, ...]:
        names = [("user-namespace", self.user_namespace), ("network-namespace", self.network_namespace),
                 ("read-only-filesystem", self.read_only), ("unprivileged-user", self.unprivileged_user),
                 ("seccomp", self.seccomp), ("rlimits", True), ("audit-hook", True)]
        return tuple(name for name, on in names if on)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: bytes | None = None) -> None:
    encode = (lambda s: None if s is None else os.fsencode(s))
    _check(_libc().mount(encode(source), encode(target), encode(fstype), flags, data), f"mount {target}")


def _set_mount_attributes(path: str, flags: int, attr_set: int = 0, attr_clr: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    result = _libc().syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_long(_AT_FDCWD),
                             ctypes.c_char_p(os.fsencode(path)), ctypes.c_long(flags),
                             ctypes.c_void_p(ctypes.addressof(attr)), ctypes.c_long(ctypes.sizeof(attr)))
    _check(result, f"mount_setattr {path}")


@functools.lru_cache(maxsize=1)
def _seccomp_program() -> tuple[_SockFprog, ctypes.Array] | None:
    """The BPF filter for this machine's architecture (None where the kit has no table)."""
    table = _SECCOMP.get(platform.machine())
    if table is None:
        return None
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    # (opcode, jump if true, jump if false, k); jumps name a label or skip that many instructions
    program: list[tuple[int, Any, Any, int]] = [(load, 0, 0, 4), (jeq, 0, "deny", table["arch"]), (load, 0, 0, 0)]
    if table["arch"] == 0xC000003E:
        program.append((jge, "deny", 0, 0x40000000))  # the x32 ABI: the same calls under other numbers
    program += [(jeq, "deny", 0, number) for number in table["blocked"]]
    program += [(jeq, 0, "allow", table["rt_sigaction"]),
                (load, 0, 0, 24), (jeq, 0, "deny", 0), (load, 0, 0, 28), (jeq, "allow", "deny", 0),  # act == NULL
                (ret, 0, 0, 0x7FFF0000), (ret, 0, 0, 0x00050000 | 1)]  # ALLOW; ERRNO(EPERM)
    labels = {"allow": len(program) - 2, "deny": len(program) - 1}
    code = b"".join(struct.pack("HBBI", op, *[labels[j] - i - 1 if j in labels else j for j in (jt, jf)], k)
                    for i, (op, jt, jf, k) in enumerate(program))
    buffer = ctypes.create_string_buffer(code, len(code))
    return _SockFprog(len(program), ctypes.addressof(buffer)), buffer


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _interpreter() -> str:
    return os.path.realpath(sys.executable)


def _under(path: str, directory: str) -> bool:
    return (path + os.sep).startswith(directory.rstrip(os.sep) + os.sep)


@functools.lru_cache(maxsize=1)
def _hidden_interpreter_dir() -> str | None:
    """The outermost directory above the interpreter that other users cannot enter (``/root``)."""
    current = os.sep
    for part in _interpreter().strip(os.sep).split(os.sep)[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _directories_to_hide(plan: _Plan, workdir: str) -> list[str]:
    """The home directory of the user running the kit (keys, tokens, caches), and for
    ``nobody`` the directory it cannot enter on the way to the interpreter.

    A directory holding the working directory, the filesystem root, or an interpreter that
    lives outside its own prefix (a copied venv) stays visible.
    """
    prefix = os.path.realpath(sys.base_prefix)
    try:
        candidates = [os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)]
    except KeyError:  # a uid without a passwd entry, as in some containers
        candidates = []
    if plan.unprivileged_user:
        candidates.append(_hidden_interpreter_dir())
    return [d for d in dict.fromkeys(candidates)
            if d and d != os.sep and os.path.isdir(d) and not _under(workdir, d) and not _under(d, prefix)
            and (_under(_interpreter(), prefix) or not _under(_interpreter(), d))]


def _make_filesystem_read_only(workdir: str, hidden: list[str]) -> None:
    """In the child's own mount namespace: everything read-only but the working directory.

    Args:
        workdir: the one directory left writable.
        hidden: directories to cover with an empty tmpfs; the interpreter's prefix is put
            back at its own path when it lies inside one of them.
    """
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the host
    prefix = os.path.realpath(sys.base_prefix)
    os.umask(0o022)  # the directories made below must let nobody through
    for directory in hidden:
        staging = os.path.join(workdir, ".interpreter") if _under(prefix, directory) else None
        if staging:
            os.mkdir(staging)
            _mount(prefix, staging, None, _MS_BIND | _MS_REC)
        _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=64k")
        if staging:
            os.makedirs(prefix, 0o755)
            _mount(staging, prefix, None, _MS_MOVE)
            os.rmdir(staging)
    # Other processes' command lines and environments are in /proc: an empty tmpfs hides them.
    _mount("tmpfs", "/proc", "tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0555,size=4k")
    _mount(workdir, workdir, None, _MS_BIND)
    _set_mount_attributes("/", _AT_RECURSIVE, attr_set=_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID)
    _set_mount_attributes(workdir, 0, attr_clr=_MOUNT_ATTR_RDONLY)
    os.chdir(workdir)  # the old cwd is the read-only mount underneath


def _enter_box(plan: _Plan, workdir: str, hidden: list[str], limits: SandboxLimits) -> None:
    """Set up the OS layers in the child, between fork and exec (runs as ``preexec_fn``)."""
    namespaces = (_CLONE_NEWNET if plan.network_namespace else 0) | (_CLONE_NEWNS if plan.read_only else 0)
    if plan.user_namespace:
        uid, gid = os.getuid(), os.getgid()
        _check(_libc().unshare(_CLONE_NEWUSER | namespaces), "unshare")
        # The same ids inside: not 0, so the interpreter loses every capability at exec and
        # cannot undo the read-only mounts made here.
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    elif namespaces:
        _check(_libc().unshare(namespaces), "unshare")
    if plan.read_only:
        _make_filesystem_read_only(workdir, hidden)
    if plan.unprivileged_user:
        uid, gid = _nobody()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    _limit_resources(limits)  # after setuid: RLIMIT_NPROC then counts nobody's processes
    if plan.seccomp:
        fprog, _ = _seccomp_program()
        _check(_libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc().prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


def _candidate_layers() -> list[_Plan]:
    """The OS layers to try, best first; each one that works joins the plan.

    The namespace candidates are alternatives: once the stronger holds, the weaker adds
    nothing and is not tried.
    """
    if not sys.platform.startswith("linux"):
        return [_Plan(unprivileged_user=True)] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        return [_Plan(network_namespace=True, read_only=True), _Plan(network_namespace=True),
                _Plan(unprivileged_user=True), _Plan(seccomp=_seccomp_program() is not None)]
    return [_Plan(user_namespace=True, network_namespace=True, read_only=True),
            _Plan(user_namespace=True, network_namespace=True), _Plan(seccomp=_seccomp_program() is not None)]


def _works(plan: _Plan) -> bool:
    """Whether a run with these layers starts and writes in its working directory."""
    probe = "open('probe', 'w').write('ok')\nprint(open('probe').read())"
    try:
        result = _execute(probe, SandboxLimits(), plan)[0]
    except (OSError, RuntimeError):
        return False
    return result.ok and result.stdout.strip() == "ok"


@functools.lru_cache(maxsize=1)
def _probed_plan() -> _Plan:
    """The strongest plan that works here, found by running a probe per candidate (once)."""
    plan = _Plan()
    for extra in _candidate_layers():
        merged = _Plan(**{name: getattr(plan, name) or getattr(extra, name) for name in _Plan.__dataclass_fields__})
        if merged != plan and _works(merged):
            plan = merged
    return plan


def _current_plan() -> _Plan:
    mode = os.environ.get(ISOLATION_ENV, "auto")
    if mode == "hook":
        return _Plan()
    if mode != "auto":
        raise ValueError(f"{ISOLATION_ENV} must be 'auto' or 'hook', got {mode!r}")
    return _probed_plan()


def isolation() -> tuple[str, ...]:
    """The layers a sandboxed run gets on this machine now (probed once per process).

    Returns:
        Names such as ``"network-namespace"``, ``"read-only-filesystem"``,
        ``"unprivileged-user"``, ``"seccomp"``, ``"rlimits"``, ``"audit-hook"``.
    """
    return _current_plan().layers


# --- running one program --------------------------------------------------------------------

_KEEP_BYTES = 32 * 1024  # of each stream: the first and the last this many bytes
_VERDICT_BYTES = 4 * _MIB  # of the verdict pipe: the last this many bytes (the harness writes last)
_DRAIN_SECONDS = 0.2  # how long output may still arrive after the interpreter exited


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


class _Capture:
    """A stream's first ``head`` and last ``tail`` bytes, and a count of the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = bytearray(), bytearray()
        self.head_size, self.tail_size, self.total = head, tail, 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = max(self.head_size - len(self.head), 0)
        self.head += chunk[:room]
        self.tail += chunk[room:]
        if len(self.tail) > 2 * self.tail_size:  # trim in batches: amortized O(1) per byte
            del self.tail[:-self.tail_size]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - min(len(self.tail), self.tail_size)

    def data(self) -> bytes:
        """The kept tail."""
        return bytes(self.tail[-self.tail_size:]) if self.tail_size else b""

    def text(self) -> str:
        gap = f"\n[... {self.dropped} bytes not kept ...]\n".encode() if self.dropped else b""
        return (bytes(self.head) + gap + self.data()).decode("utf-8", errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(proc: subprocess.Popen, program: bytes, deadline: float,
             verdict_fd: int | None) -> tuple[_Capture, _Capture, _Capture, bool]:
    """Feed stdin and read every pipe until EOF, the interpreter's exit or the deadline.

    Never waits on a pipe past the deadline: a grandchild holding one open cannot
    stretch the run, and the process group is killed as soon as the interpreter exits.
    """
    out, err, verdict = _Capture(_KEEP_BYTES, _KEEP_BYTES), _Capture(_KEEP_BYTES, _KEEP_BYTES), _Capture(0, _VERDICT_BYTES)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout.fileno(), selectors.EVENT_READ, out)
    selector.register(proc.stderr.fileno(), selectors.EVENT_READ, err)
    if verdict_fd is not None:
        selector.register(verdict_fd, selectors.EVENT_READ, verdict)
    os.set_blocking(proc.stdin.fileno(), False)
    selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, None)
    pending, exited_at, timed_out = memoryview(program), None, False
    try:
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                _kill_group(proc)  # anything it left behind goes too, and lets go of the pipes
            if now >= deadline or (exited_at is not None and now - exited_at > _DRAIN_SECONDS):
                timed_out = exited_at is None
                break
            for key, _ in selector.select(min(deadline - now, 0.05)):
                if key.data is None:
                    try:
                        pending = pending[os.write(key.fd, pending[:65536]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading: nothing more to send
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(key.fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fd)
    finally:
        selector.close()
    return out, err, verdict, timed_out


def _execute_here(program: str | tuple[str, str], limits: SandboxLimits, plan: _Plan,
                  guard: str) -> tuple[SandboxResult, bytes]:
    """Run a program under ``plan``, forking from this process (the broker's side of :func:`_execute`).

    Args:
        program: the source, or its two halves around the number of a pipe of its own in
            the child (``head + str(fd) + tail``), for a verdict that the output cannot forge.
        limits: resource limits.
        plan: the OS layers to set up.
        guard: the child's bootstrap (``_GUARD``), which installs the audit hook and reads the program.

    Returns:
        The result, and what arrived on the verdict pipe (its last 4 MiB).
    """
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="course_lib_sandbox_") as workdir:
        workdir = os.path.realpath(workdir)
        if plan.unprivileged_user:
            os.chown(workdir, *_nobody())
        hidden = _directories_to_hide(plan, workdir) if plan.read_only else []
        read_end, write_end = (None, None) if isinstance(program, str) else os.pipe()
        try:
            source = program if write_end is None else f"{program[0]}{write_end}{program[1]}"
            try:
                proc = subprocess.Popen(
                    [_interpreter(), "-I", "-S", "-c", guard],
                    cwd=workdir,
                    env=_scrubbed_env(workdir),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its own process group, so the timeout kills children too
                    pass_fds=() if write_end is None else (write_end,),
                    preexec_fn=functools.partial(_enter_box, plan, workdir, hidden, limits),
                )
            except subprocess.SubprocessError as err:  # a layer could not be set up in the child
                raise RuntimeError(f"sandbox: could not set up {', '.join(plan.layers)}; "
                                   f"{ISOLATION_ENV}=hook runs with the audit hook only") from err
            finally:
                if write_end is not None:
                    os.close(write_end)  # the child holds the only write end
            try:
                out, err, verdict, timed_out = _collect(proc, source.encode("utf-8"), start + limits.wall_seconds,
                                                        read_end)
            finally:
                _kill_group(proc)
                proc.wait()
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    stream.close()
        finally:
            if read_end is not None:
                os.close(read_end)
    return SandboxResult(
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        wall_seconds=time.monotonic() - start,
        isolation=plan.layers,
        output_bytes_dropped=out.dropped + err.dropped,
    ), verdict.data()


# --- the broker: sandboxes forked from a small process --------------------------------------

# Forking copies the parent's page tables: from a process that holds a model (a GiB or more)
# that costs more than the sandboxed run itself (docs/sandbox.md). So a small helper process,
# started on the first run and kept for the process's lifetime, forks every sandbox. It is the
# kit's own code, loaded from this file in an isolated interpreter; requests and results go
# over its stdin and stdout as length-prefixed JSON.
_BROKER_MAIN = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("course_lib_sandbox_broker", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # dataclasses look their module up while the file loads
spec.loader.exec_module(module)
module._serve()
"""
_BROKER_GRACE_SECONDS = 30.0  # beyond a run's wall limit: its working directory's set-up and clean-up


def _write_message(stream, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode("utf-8")
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read_message(stream) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = struct.unpack("<Q", header)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return json.loads(data)


def _serve() -> None:
    """The broker's loop: one run per request, until its stdin closes (the kit's process ended)."""
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the replies
    while (request := _read_message(requests)) is not None:
        program = request["program"] if isinstance(request["program"], str) else tuple(request["program"])
        try:
            result, verdict = _execute_here(program, SandboxLimits(**request["limits"]), _Plan(**request["plan"]),
                                            request["guard"])
        except (OSError, RuntimeError) as err:
            _write_message(replies, {"error": "OSError" if isinstance(err, OSError) else "RuntimeError",
                                     "message": str(err)})
            continue
        _write_message(replies, {"result": asdict(result), "verdict": base64.b64encode(verdict).decode("ascii")})


class _Broker:
    """The kit's side of the broker: starts it on first use (again in a forked child, or after it died)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0  # the pid that started it: a forked child starts its own

    def _running(self) -> bool:
        return self._proc is not None and self._owner == os.getpid() and self._proc.poll() is None

    def _start(self) -> None:
        # A session of its own: an interrupt to the kit's process group (Ctrl-C, a notebook kernel's) is not
        # its to handle; it leaves when its stdin closes.
        self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BROKER_MAIN, os.path.abspath(__file__)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self._owner = os.getpid()

    def _stop(self) -> None:
        if self._proc is not None and self._owner == os.getpid():
            self._proc.kill()
            self._proc.wait()
            self._proc.stdin.close()
            self._proc.stdout.close()
        self._proc = None

    @property
    def pid(self) -> int | None:
        """The broker's process id, or None before the first run."""
        return self._proc.pid if self._running() else None

    def run(self, request: dict[str, Any], timeout: float, wait: bool = True) -> dict[str, Any] | None:
        """Send one request and wait for its reply; a broker that died is started again once.

        Returns None, having sent nothing, when ``wait`` is False and another thread is using it.
        """
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            for _ in range(2):
                if not self._running():
                    self._start()
                try:
                    _write_message(self._proc.stdin, request)
                    ready = selectors.DefaultSelector()
                    ready.register(self._proc.stdout, selectors.EVENT_READ)
                    answered = ready.select(timeout)
                    ready.close()
                    reply = _read_message(self._proc.stdout) if answered else None
                except (BrokenPipeError, ValueError):  # it died while we wrote; ValueError: bad JSON
                    reply = None
                if reply is not None:
                    return reply
                self._stop()
        finally:
            self._lock.release()
        raise RuntimeError("sandbox: the helper process that starts sandboxed runs stopped answering")


# Two brokers: a caller judging from two threads (course_lib.domains.gold_scores) runs two sandboxes at a time,
# one per core. A lone thread always finds the first free and uses only it.
_BROKERS = (_Broker(), _Broker())


def _broker_run(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send a request to a free broker, or wait for the first when both are busy."""
    for broker in _BROKERS:
        reply = broker.run(request, timeout, wait=False)
        if reply is not None:
            return reply
    return _BROKERS[0].run(request, timeout)


def _execute(program: str | tuple[str, str], limits: SandboxLimits, plan: _Plan) -> tuple[SandboxResult, bytes]:
    """Run a program under ``plan``, forked by the broker (see :func:`_execute_here` for the arguments).

    Raises:
        RuntimeError: an OS layer could not be set up, or the broker stopped answering.
        OSError: the working directory or the pipes could not be made.
    """
    reply = _broker_run({"program": program, "limits": asdict(limits), "plan": asdict(plan), "guard": _GUARD},
                        timeout=limits.wall_seconds + _BROKER_GRACE_SECONDS)
    if "error" in reply:
        raise (OSError if reply["error"] == "OSError" else RuntimeError)(reply["message"])
    result = SandboxResult(**{**reply["result"], "isolation": tuple(reply["result"]["isolation"])})
    return result, base64.b64decode(reply["verdict"])


def run_python(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run untrusted Python source in a fresh, limited, isolated interpreter.

    Args:
        program: the source to run (stdlib only: site-packages are not on the path).
        limits: resource limits; the defaults suit small unit-test programs.

    Returns:
        A :class:`SandboxResult`; the call itself never raises for anything the program does.
    """
    return _execute(program, limits or SandboxLimits(), _current_plan())[0]


# --- running tests --------------------------------------------------------------------------

# The harness is defined before the solution runs, and everything it uses is bound as a
# default argument then, so the solution cannot swap ``exec``, ``json`` or ``os.write``
# under it. Return values are written as plain data by hand (exact types only: a subclass
# or any other object becomes {"opaque": name}); the record goes to a pipe of its own,
# after a per-run secret the solution never sees, and the interpreter exits at once.
_TEST_HARNESS = r'''
def _harness(solution, entries, secret, fd, exec=exec, eval=eval, compile=compile, type=type, str=str,
             len=len, BaseException=BaseException, write=__import__("os").write, exit=__import__("os")._exit,
             quote=__import__("json").encoder.encode_basestring_ascii, int_repr=int.__repr__,
             float_repr=float.__repr__, dict_items=dict.items, name_of=type.__dict__["__name__"].__get__,
             flushes=(__import__("sys").stdout.flush, __import__("sys").stderr.flush)):
    def plain(value, depth):
        kind = type(value)
        if value is None or value is True or value is False:
            return "null" if value is None else "true" if value else "false"
        if kind is int:
            return int_repr(value)
        if kind is float:
            text = float_repr(value)
            return "NaN" if text == "nan" else "Infinity" if text == "inf" else "-Infinity" if text == "-inf" else text
        if kind is str:
            return quote(value)
        if depth < 32:
            if kind is list:
                return "[" + ",".join([plain(item, depth + 1) for item in value]) + "]"
            if kind is tuple or kind is set or kind is frozenset:
                items = ",".join([plain(item, depth + 1) for item in value])
                return '{"' + name_of(kind) + '":[' + items + "]}"
            if kind is dict:
                pairs = ["[" + plain(k, depth + 1) + "," + plain(v, depth + 1) + "]" for k, v in dict_items(value)]
                return '{"dict":[' + ",".join(pairs) + "]}"
        return '{"opaque":' + quote(name_of(kind)) + "}"

    def describe(exc):
        try:
            text = str(exc)
        except BaseException:
            text = ""
        text = text[:200] if type(text) is str else ""
        return quote(name_of(type(exc)) + (": " + text if text else ""))

    namespace = {"__name__": "solution"}
    loaded, error, outcomes = "false", "null", []
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
        loaded = "true"
    except BaseException as exc:
        error = describe(exc)
    for kind, source in entries if loaded == "true" else ():
        try:
            if kind == "call":
                value = eval(compile(source, "test.py", "eval"), namespace)
                try:
                    text = plain(value, 0)
                except BaseException:
                    text = '{"opaque":"unreadable"}'
                outcome = '["value",' + (text if len(text) <= 262144 else '{"opaque":"too large"}') + "]"
            else:
                exec(compile(source, "test.py", "exec"), namespace)
                outcome = '["passed",true]'
        except BaseException as exc:
            outcome = '["raised",' + describe(exc) + "]"
        outcomes.append(outcome)
    for flush in flushes:
        try:
            flush()
        except BaseException:
            pass
    data = ("\n" + secret + "[" + loaded + "," + error + ",[" + ",".join(outcomes) + "]]\n").encode()
    while data:
        data = data[write(fd, data):]
    exit(0)
'''

_COMPARISONS = {ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not"}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _literal(node: ast.AST) -> Any:
    """The value of a plain-data expression: literals and small number arithmetic (``7 * 3``).

    Raises:
        ValueError: for anything else (names, calls, ``**``, huge numbers).
    """
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, str, bool, type(None)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(item) for item in node.elts]
        try:
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        except TypeError as err:  # an unhashable set member
            raise ValueError(str(err)) from None
    if isinstance(node, ast.Dict) and None not in node.keys:
        try:
            return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
        except TypeError as err:
            raise ValueError(str(err)) from None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if type(value) in (int, float):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _literal(node.left), _literal(node.right)
        if all(type(v) in (int, float) and abs(v) < 1e15 for v in (left, right)):
            try:
                return _ARITHMETIC[type(node.op)](left, right)
            except ZeroDivisionError as err:
                raise ValueError(str(err)) from None
    raise ValueError(f"not plain data: {ast.unparse(node)}")


def _split_assert(test: str) -> tuple[str, str, Any] | None:
    """``assert <expr> <op> <plain data>`` as (expression, op, expected value), else None."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert) or tree.body[0].msg is not None:
        return None
    compare = tree.body[0].test
    if not isinstance(compare, ast.Compare) or len(compare.ops) != 1 or type(compare.ops[0]) not in _COMPARISONS:
        return None
    try:
        expected = _literal(compare.comparators[0])
    except ValueError:
        return None
    op = _COMPARISONS[type(compare.ops[0])]
    if op.startswith("is") and not any(expected is v for v in (None, True, False)):
        return None
    return ast.unparse(compare.left), op, expected


class _Opaque:
    """A value the child could not send as plain data: it equals nothing."""

    __slots__ = ("description",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, description: Any) -> None:
        self.description = description

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True


def _decode_tagged(pairs: list[tuple[str, Any]]) -> Any:
    """Turn the harness's tagged JSON objects back into tuples, sets and dicts."""
    if len(pairs) == 1 and type(pairs[0][1]) is list:
        tag, items = pairs[0]
        builders = {"tuple": tuple, "set": set, "frozenset": frozenset}
        try:
            if tag in builders:
                return builders[tag](items)
            if tag == "dict" and all(type(p) is list and len(p) == 2 for p in items):
                return dict(items)
        except TypeError:  # an unhashable member
            pass
    return _Opaque(pairs)


def _read_record(channel: bytes, secret: str) -> tuple[bool, str | None, list] | None:
    """The harness's record from the result pipe, or None when there is no valid one."""
    start = channel.rfind(secret.encode())
    if start < 0:
        return None
    line = channel[start + len(secret):].split(b"\n", 1)[0]
    try:
        record = json.loads(line, object_pairs_hook=_decode_tagged)
    except (ValueError, RecursionError):
        return None
    if not (type(record) is list and len(record) == 3 and type(record[0]) is bool
            and (record[1] is None or type(record[1]) is str) and type(record[2]) is list
            and all(type(o) is list and len(o) == 2 for o in record[2])):
        return None
    return record[0], record[1], record[2]


def _holds(value: Any, op: str, expected: Any) -> bool:
    if op == "is":
        return value is expected
    if op == "is not":
        return value is not expected
    return bool(value == expected) if op == "==" else bool(value != expected)


def run_tests(solution: str, tests: list[str], limits: SandboxLimits | None = None) -> dict[str, Any]:
    """Run a solution, then each test snippet, in one sandboxed interpreter.

    Each test is a separate snippet (an ``assert`` line, or a whole ``check`` program)
    run in the solution's namespace; one failing test does not stop the others. A test
    shaped ``assert <expression> <op> <plain data>`` with ``op`` one of ``==``, ``!=``,
    ``is``, ``is not`` is decided here: the child evaluates only the expression and sends
    its value back as plain data (None, bool, int, float, str, list, tuple, set, dict);
    anything else, e.g. an object with its own ``__eq__``, fails. Other tests report
    pass/fail from inside the child.

    Args:
        solution: Python source defining the function(s) under test.
        tests: test snippets.
        limits: resource limits for the run.

    Returns:
        ``{"loaded": bool, "passed": list[bool], "error": str | None, "timed_out": bool,
        "isolation": list[str], "compared_in_parent": list[bool]}``; when the run dies
        (timeout, memory, crash) every test counts as failed.
    """
    split = [_split_assert(test) for test in tests]
    entries = [("call", s[0]) if s else ("snippet", test) for s, test in zip(split, tests)]
    secret = secrets.token_hex(16)
    program = (_TEST_HARNESS + f"_harness({solution!r}, {entries!r}, {secret!r}, ", ")\n")  # around the verdict fd
    result, channel = _execute(program, limits or SandboxLimits(), _current_plan())
    outcome = {"isolation": list(result.isolation), "compared_in_parent": [s is not None for s in split],
               "timed_out": result.timed_out}
    record = _read_record(channel, secret)
    if record is None or len(record[2]) != (len(tests) if record[0] else 0):
        reason = "timed out" if result.timed_out else (result.stderr.strip().splitlines() or ["no result"])[-1]
        return {"loaded": False, "passed": [False] * len(tests), "error": reason[:200], **outcome}
    loaded, error, reports = record
    if not loaded:
        return {"loaded": False, "passed": [False] * len(tests), "error": error, **outcome}
    passed = [kind == "passed" and value is True if check is None else kind == "value" and _holds(value, *check[1:])
              for check, (kind, value) in zip(split, reports)]
    return {"loaded": True, "passed": passed, "error": error, **outcome}
