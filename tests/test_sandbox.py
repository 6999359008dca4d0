"""The sandbox that runs model-written code: limits, timeouts, scrubbed environment."""
import os

import pytest

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
