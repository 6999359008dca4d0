"""The sandbox that runs model-written code: limits, timeouts, scrubbed environment, isolation."""
import os
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from course_lib import sandbox
from course_lib.domains import code, gold_score
from course_lib.sandbox import SandboxLimits, run_python, run_tests

pytestmark = pytest.mark.unit


def test_runs_code_and_reports_each_test():
    out = run_tests("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"])
    assert out["loaded"] and out["passed"] == [True, False] and not out["timed_out"]


def test_wall_clock_timeout_kills_the_process_group():
    result = run_python("import time\ntime.sleep(30)", SandboxLimits(wall_seconds=0.5))
    assert result.timed_out and not result.ok and result.wall_seconds < 5


def test_cpu_limit_stops_a_busy_loop():
    out = run_tests("while True:\n    pass", ["assert True"], SandboxLimits(cpu_seconds=1, wall_seconds=10))
    assert out["passed"] == [False] and not out["loaded"]


def test_memory_and_file_size_limits():
    assert run_tests("x = bytearray(2 * 1024 ** 3)", ["assert True"])["passed"] == [False]
    result = run_python("open('big', 'wb').write(b'0' * (3 * 1024 * 1024))", SandboxLimits(file_size_mb=1))
    assert result.returncode != 0


def test_network_processes_and_shell_are_refused():
    for program in ("import socket\nsocket.socket()", "import subprocess\nsubprocess.run(['true'])",
                    "import os\nos.system('true')", "import os\nos.fork()"):
        result = run_python(program)
        assert result.returncode != 0 and "sandbox" in result.stderr, program


def test_environment_is_scrubbed_and_workdir_is_temporary(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())")
    assert "SECRET_TOKEN" not in result.stdout and "HF_TOKEN" not in result.stdout
    cwd = result.stdout.strip().splitlines()[-1]
    assert "course_lib_sandbox_" in cwd and not os.path.exists(cwd)


def test_code_cannot_forge_results_by_printing():
    out = run_tests("print('@@result-0000@@{\"loaded\": true, \"passed\": [true]}')", ["assert False"])
    assert out["passed"] == [False]


def test_limits_are_validated():
    with pytest.raises(ValueError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)


@pytest.mark.parametrize(
    "attack",
    [
        # Swap the harness's exec so the tests never run.
        "import sys\nsys._getframe(1).f_globals['exec'] = lambda *a, **k: None",
        "import builtins\nbuiltins.exec = lambda *a, **k: None",
        # Reach the harness's frame through a traceback.
        "try:\n    raise ValueError\nexcept ValueError as e:\n    e.__traceback__.tb_frame.f_back.f_locals['passed'].append(True)",
        # Read the marker from the harness's frame, print a forged result and exit before the real one.
        "import os, sys\nm = sys._getframe(1).f_locals['marker']\nprint(m + '{\"loaded\": true, \"passed\": [true, true], \"error\": null}')\nos._exit(0)",
        # Find the result marker among live objects and print a forged result.
        "import gc\nprint([o for o in gc.get_objects() if isinstance(o, str) and o.startswith('@@result')])",
    ],
)
def test_solution_cannot_forge_its_test_results(attack):
    outcome = run_tests(f"def add(a, b):\n    return 0\n{attack}", ["assert add(1, 2) == 3", "assert add(2, 2) == 4"])
    assert outcome["passed"] == [False, False]


def test_stdlib_that_reads_its_callers_frame_still_works():
    solution = "import collections, typing\nPoint = collections.namedtuple('Point', 'x y')\nT = typing.TypeVar('T')\n" \
               "def add(a, b):\n    return Point(a, b).x + b"
    assert run_tests(solution, ["assert add(1, 2) == 3"])["passed"] == [True]


def test_solution_cannot_touch_files_outside_its_working_directory(tmp_path):
    victim = tmp_path / "user_file.txt"
    victim.write_text("precious")
    for attack in (f"import os\nos.remove({str(victim)!r})", f"open({str(victim)!r}, 'w').write('gone')",
                   f"import os\nos.rename({str(victim)!r}, {str(victim)!r} + '.x')"):
        outcome = run_tests(f"{attack}\ndef add(a, b):\n    return a + b", ["assert add(1, 2) == 3"])
        assert outcome["passed"] == [False] and "not allowed" in outcome["error"]
    assert victim.read_text() == "precious"
    # Scratch files in its own working directory are fine.
    assert run_tests("open('scratch.txt', 'w').write('x')\ndef add(a, b):\n    return a + b", ["assert add(1, 2) == 3"])["passed"] == [True]


# --- issue 12, item 3: attacks that got through the first sandbox --------------------------

BARE_GUARD = "import sys\nexec(compile(sys.stdin.read(), '<sandboxed>', 'exec'), {'__name__': '__main__'})\n"
"""A guard without the audit hook: what the OS layers alone hold against."""


@pytest.fixture(params=["auto", "hook"])
def isolation_mode(request, monkeypatch):
    """Run a test with every OS layer this machine offers, then with the audit hook alone."""
    monkeypatch.setenv(sandbox.ISOLATION_ENV, request.param)
    return request.param


def _processes_with(token):
    return [p for p in psutil.process_iter(["cmdline"]) if token in " ".join(p.info["cmdline"] or [])]


def _fork_exec_shell(victim, port, token):
    """A shell through ``_posixsubprocess.fork_exec`` (no audit event), fetched through importlib
    so that no import statement shows it: it writes outside the box, connects to a loopback
    listener and leaves a process behind in a session of its own."""
    command = f"echo pwned > {victim}; echo hi > /dev/tcp/127.0.0.1/{port}; sleep {token} &".encode()
    return f"""
import importlib.machinery, importlib.util, os
name = "_posixsubprocess"
spec = importlib.machinery.BuiltinImporter.find_spec(name) or importlib.util.find_spec(name)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
r, w = os.pipe()
args = ([b"/bin/bash", b"-c", {command!r}], [b"/bin/bash"], False, (), None, None,
        -1, -1, -1, -1, -1, -1, r, w, False, True)
for tail in ((-1, None, None, None, -1, None, False), (-1, None, None, None, -1, None), (None, None, None, -1, None)):
    try:  # the number of arguments differs between Python versions
        module.fork_exec(*args, *tail)
        break
    except TypeError:
        pass
"""


def _assert_shell_got_nowhere(tmp_path, program_for):
    tmp_path.chmod(0o777)  # so that only the sandbox, not the permissions of pytest's folder, stops the write
    victim = tmp_path / "victim"
    token = f"31.{secrets.randbelow(10 ** 6)}"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        result = run_python(program_for(victim, listener.getsockname()[1], token), SandboxLimits(wall_seconds=3))
        time.sleep(0.3)  # a shell that did start has had time to act
        with pytest.raises(BlockingIOError):
            listener.accept()
    left = _processes_with(token)
    for process in left:
        process.kill()
    assert not victim.exists() and not left, result
    return result


def test_results_report_the_isolation_in_force(isolation_mode):
    layers = sandbox.isolation()
    assert layers[-2:] == ("rlimits", "audit-hook")
    if isolation_mode == "hook":
        assert layers == ("rlimits", "audit-hook")
    assert run_python("print(1)").isolation == layers
    assert run_tests("def f():\n    return 1", ["assert f() == 1"])["isolation"] == list(layers)


def test_fork_exec_shell_cannot_write_connect_or_linger(tmp_path):
    """Attack 1, against every layer in force."""
    result = _assert_shell_got_nowhere(tmp_path, _fork_exec_shell)
    assert result.returncode != 0


def test_os_layers_alone_stop_the_fork_exec_shell(tmp_path, monkeypatch):
    """Attack 1 again with the audit hook taken out: the OS layers hold on their own."""
    layers = set(sandbox.isolation())
    if "seccomp" not in layers or not layers & {"read-only-filesystem", "unprivileged-user"}:
        pytest.skip(f"this machine offers too few OS layers: {sorted(layers)}")
    monkeypatch.setattr(sandbox, "_GUARD", BARE_GUARD)
    assert "Operation not permitted" in _assert_shell_got_nowhere(tmp_path, _fork_exec_shell).stderr


@pytest.mark.parametrize("route", ["importlib", "import statement"])
def test_audit_hook_alone_refuses_posixsubprocess(tmp_path, monkeypatch, route):
    """Where the OS offers nothing, the hook refuses ``_posixsubprocess`` however it is fetched."""
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "hook")
    program = _fork_exec_shell
    if route == "import statement":
        program = (lambda victim, port, token: _fork_exec_shell(victim, port, token)
                   .replace("spec = importlib.machinery", "import _posixsubprocess\nspec = importlib.machinery"))
    assert "_posixsubprocess is not allowed" in _assert_shell_got_nowhere(tmp_path, program).stderr


# Walks from a frame to the harness's and writes an all-pass verdict with the harness's own
# secret (the first harness printed its verdict after a marker, and read it from stdout).
FORGE = """
import os, sys, time
def forge(frame):
    while frame is not None and not {"secret", "marker"} & set(frame.f_locals):
        frame = frame.f_back
    names = frame.f_locals
    if "marker" in names:
        print(names["marker"] + '{"loaded": true, "passed": [true, true], "error": null}', flush=True)
    else:
        os.write(names["fd"], ("\\n" + names["secret"] + '[true,null,[["passed",true],["passed",true]]]\\n').encode())
    os._exit(0)
"""
FRESH_SIGNAL_MODULE = ("import importlib.machinery, importlib.util\n"
                       "fresh = importlib.util.module_from_spec(importlib.machinery.BuiltinImporter.find_spec('_signal'))\n"
                       "fresh.signal(14, lambda signum, frame: forge(frame))\nfresh.setitimer(0, 0.01)\ntime.sleep(1)")
IN_PARENT = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
IN_CHILD = ["def check(f):\n    assert f(1, 2) == 3\ncheck(add)", "assert add(2, 2) in (4,)"]


@pytest.mark.parametrize("attack", [
    # Attack 2: from the solution's own frame to the harness's.
    "forge(sys._getframe(0))",
    "forge(__import__('inspect').currentframe())",
    # A signal handler is handed the interrupted frame.
    "import signal\nsignal.signal(signal.SIGALRM, lambda signum, frame: forge(frame))\n"
    "signal.setitimer(signal.ITIMER_REAL, 0.01)\ntime.sleep(1)",
    # Attack 2: replace json's default encoder, which the first harness wrote its verdict with.
    "import json\nclass Forged(json.JSONEncoder):\n    def encode(self, o):\n"
    "        return '{\"loaded\": true, \"passed\": [true, true], \"error\": null}'\n"
    "json._default_encoder = Forged()",
])
@pytest.mark.parametrize("tests", [IN_PARENT, IN_CHILD])
def test_solution_cannot_forge_through_frames_or_the_encoder(attack, tests, isolation_mode):
    outcome = run_tests(f"{FORGE}\ndef add(a, b):\n    return 0\n{attack}", tests)
    assert outcome["passed"] == [False, False], outcome


def test_a_fresh_signal_module_cannot_hand_out_frames(isolation_mode):
    """importlib re-creates the built-in ``_signal`` without an audit event: the guard refuses it."""
    solution = f"{FORGE}\ndef add(a, b):\n    return 0\n{FRESH_SIGNAL_MODULE}"
    for tests in (IN_PARENT, IN_CHILD):
        outcome = run_tests(solution, tests)
        assert outcome["passed"] == [False, False] and "_signal is not allowed" in outcome["error"], outcome


@pytest.mark.parametrize("attack", [
    "open({victim_bytes!r}, 'w').write('gone')",  # attack 3: a bytes path
    "import os\nos.open({victim!r}, os.O_RDONLY | os.O_TRUNC)",  # attack 3: truncation on a read-only open
    "import os\nos.mkdir({new!r})",  # attack 3: a directory outside the box
    "import os\nos.makedirs({new!r} + '/deeper')",
    "import os, pathlib\nos.open(pathlib.PurePath({victim!r}), os.O_WRONLY)",
    "import os\nfd = os.open({outside!r}, os.O_RDONLY)\nos.open('victim', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)",
    "open('/dev/fd/../../../..' + {victim!r}, 'w').write('gone')",
    "import os\nos.mknod({new!r})",  # no audit event
])
@pytest.mark.parametrize("mode", ["auto", "hook", "os-only"])
def test_solution_cannot_write_outside_by_other_paths(tmp_path, monkeypatch, attack, mode):
    """Attack 3, against every layer, the audit hook alone, and the OS layers alone."""
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "hook" if mode == "hook" else "auto")
    if mode == "os-only":
        if not set(sandbox.isolation()) & {"read-only-filesystem", "unprivileged-user"}:
            pytest.skip(f"no OS layer keeps files outside read-only here: {sandbox.isolation()}")
        monkeypatch.setattr(sandbox, "_GUARD", BARE_GUARD)
    tmp_path.chmod(0o777)
    victim, new = tmp_path / "victim", tmp_path / "new"
    victim.write_text("precious")
    victim.chmod(0o666)
    program = attack.format(victim=str(victim), victim_bytes=bytes(victim), new=str(new), outside=str(tmp_path))
    outcome = run_tests(f"{program}\ndef add(a, b):\n    return a + b", ["assert add(1, 2) == 3"])
    assert outcome["passed"] == [False] and outcome["error"], outcome
    assert victim.read_text() == "precious" and not new.exists()


def test_scratch_files_in_the_working_directory_are_fine(isolation_mode):
    """Making, copying, renaming and removing files in its own directory (tempfile does all four)."""
    solution = ("import os, shutil, tempfile\nos.makedirs('a/b')\nopen('a/b/c', 'w').write('x')\n"
                "shutil.copy('a/b/c', 'a/d')\nos.replace('a/d', 'a/e')\nos.remove('a/e')\n"
                "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\n"
                "def add(a, b):\n    return a + b")
    assert run_tests(solution, ["assert add(1, 2) == 3"])["passed"] == [True]


HOLD_PIPE = """import os, time
if os.fork() == 0:
    os.setsid()  # out of the process group, with stdout and stderr still open
    time.sleep({token})
    os._exit(0)
{after}"""


@pytest.mark.parametrize("after, timed_out", [("print('done')", False), ("time.sleep(30)", True)])
def test_a_process_holding_the_pipe_cannot_stretch_the_wall_limit(monkeypatch, after, timed_out):
    """Attack 4, with nothing to stop the fork (no OS layer, no hook): the parent stops
    reading at the interpreter's exit or at the deadline, whichever comes first."""
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "hook")
    monkeypatch.setattr(sandbox, "_GUARD", BARE_GUARD)
    token = f"20.{secrets.randbelow(10 ** 6)}"
    most = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    limits = SandboxLimits(wall_seconds=1, max_processes=2 ** 20 if most == resource.RLIM_INFINITY else most)
    try:
        result = run_python(HOLD_PIPE.format(token=token, after=after), limits)
    finally:
        for process in _processes_with(token):
            process.kill()
    assert result.timed_out is timed_out and result.wall_seconds < 2.5, result
    assert timed_out or result.stdout == "done\n"


FLOOD = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("sandbox", {path!r})
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox
spec.loader.exec_module(sandbox)
sandbox.run_python("print(1)")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = sandbox.run_python("import sys\\nchunk = b'x' * 2 ** 20\\nfor _ in range(200):\\n    sys.stdout.buffer.write(chunk)")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(f"/proc/{{sandbox._BROKERS[0].pid}}/status") as status:
    broker_peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(after - before, broker_peak, result.output_bytes_dropped, len(result.stdout))
"""


def test_an_output_flood_keeps_the_kits_memory_bounded():
    """Attack 5: 200 MiB of output, measured in a fresh interpreter (its peak RSS is its own) and in the broker
    that read it (its whole peak, in KiB)."""
    probe = subprocess.run([sys.executable, "-c", FLOOD.format(path=sandbox.__file__)],
                           capture_output=True, text=True, timeout=120, check=True)
    grown_kib, broker_peak_kib, dropped, kept = map(int, probe.stdout.split())
    assert grown_kib < 40 * 1024 and broker_peak_kib < 64 * 1024, probe.stdout
    assert dropped > 190 * 2 ** 20 and kept < 70 * 1024, probe.stdout


def test_runs_are_forked_by_the_broker_which_is_started_again_when_it_dies():
    """Forking from the kit's own process copies its page tables (slow once a model is loaded): a small broker forks."""
    first = run_python("import os\nprint(os.getppid())")
    broker = sandbox._BROKERS[0].pid
    assert broker not in (None, os.getpid()) and first.stdout.strip() == str(broker), first
    assert os.getsid(broker) != os.getsid(0)  # an interrupt to the kit's process group does not reach it
    os.kill(broker, signal.SIGKILL)
    again = run_tests("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3"])
    assert again["passed"] == [True] and sandbox._BROKERS[0].pid not in (None, broker), again


def test_two_threads_run_two_sandboxes_at_a_time():
    """The second broker serves a second thread: two one-second sleeps take about one second, not two."""
    from concurrent.futures import ThreadPoolExecutor

    program = "import os, time\ntime.sleep(1.0)\nprint(os.getppid())"
    run_python("print(1)")  # the first broker is up; the second starts on its first run
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        results = list(pool.map(run_python, [program, program]))
        seconds = time.monotonic() - started
    brokers = {str(broker.pid) for broker in sandbox._BROKERS}
    assert {r.stdout.strip() for r in results} == brokers and None not in brokers, results
    assert seconds < 1.7, seconds


def test_a_correct_solution_that_prints_a_lot_passes(isolation_mode):
    """Attack 5: the verdict no longer rides on stdout, so 200 KiB of prints cannot hide it."""
    solution = "def add(a, b):\n    print('x' * 200_000)\n    return a + b"
    outcome = run_tests(solution, ["assert add(1, 2) == 3", "def check(f):\n    assert f(2, 2) == 4\ncheck(add)"])
    assert outcome["passed"] == [True, True], outcome


ALWAYS_EQUAL = """
class Anything(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = int.__hash__
"""


@pytest.mark.parametrize("returns", ["Anything()", "Anything(0)", "[Anything()]", "{'k': Anything()}"])
def test_forged_eq_fails_the_kits_own_tests(returns, isolation_mode):
    """Attack 6: the returned value is compared in the parent, as plain data."""
    solution = f"{ALWAYS_EQUAL}\ndef add(a, b):\n    return {returns}"
    outcome = run_tests(solution, ["assert add(2, 3) == 5", "assert add(2, 3) == [5]", "assert add(2, 3) == {'k': 5}",
                                   "assert add(2, 3) is True"])
    assert outcome["passed"] == [False] * 4 and all(outcome["compared_in_parent"]), outcome


def test_forged_eq_scores_zero_on_a_generated_code_task():
    task = code.sample_task(random.Random(0))
    forged = f"```python\n{ALWAYS_EQUAL}\ndef {task.reference['entry_point']}(*args):\n    return Anything()\n```"
    assert gold_score("code", task.reference, forged).parts["tests_passed"] == 0
    assert gold_score("code", task.reference, task.good).parts["tests_passed"] == 1


@pytest.mark.parametrize("returns, test, passes", [
    ("3.0", "assert f() == 3", True),  # as in Python: 3.0 == 3
    ("1", "assert f() is True", False),  # `is True` means exactly True
    ("True", "assert f() is True", True),
    ("None", "assert f() is None", True),
    ("[1, (2, 'x'), {'a': [None]}]", "assert f() == [1, (2, 'x'), {'a': [None]}]", True),
    ("[1, 2]", "assert f() == (1, 2)", False),  # a list is not a tuple
    ("{3, 1}", "assert f() == {1, 3}", True),
    ("float('nan')", "assert f() != 1.5", True),
    ("7 * 3", "assert f() == 7 * 3", True),  # small arithmetic on the expected side
    ("'abc'[::-1]", "assert f() != 'abc'", True),
])
def test_values_compared_in_the_parent_keep_pythons_meaning(returns, test, passes):
    outcome = run_tests(f"def f():\n    return {returns}", [test])
    assert outcome["compared_in_parent"] == [True] and outcome["passed"] == [passes], outcome
