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
