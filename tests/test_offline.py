"""The offline guarantee: the suite runs with no network at all, and a hub id fails fast and clearly without one."""
from __future__ import annotations

import os
import socket
import time

import pytest

from course_lib.errors import ConfigError
from course_lib.models import resolve_model_path

pytestmark = pytest.mark.unit


def test_the_suite_runs_with_the_network_cut():
    """Under ``make test`` the tests run in a network namespace with loopback only (scripts/run_tests.sh)."""
    mode = os.environ.get("COURSE_LIB_TESTS_NETWORK")
    if mode != "none":
        pytest.skip(f"not run by scripts/run_tests.sh in a network namespace (COURSE_LIB_TESTS_NETWORK={mode})")
    started = time.time()
    with pytest.raises(OSError):
        socket.create_connection(("1.1.1.1", 443), timeout=5).close()  # an address: no name lookup needed
    with pytest.raises(OSError):
        socket.getaddrinfo("huggingface.co", 443)
    assert time.time() - started < 5, "a connection attempt hung instead of failing"
    with socket.create_server(("127.0.0.1", 0)) as server:  # loopback stays up for JupyterLab and the kernels
        socket.create_connection(server.getsockname(), timeout=5).close()


def test_a_hub_id_without_a_reachable_hub_fails_fast_and_clearly(monkeypatch):
    """No offline switch set, and the hub cannot be reached: one clear error in seconds, not minutes of retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Port 9 on loopback refuses at once, wherever the suite runs: the same as a machine with no route out.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.time()
    with pytest.raises(ConfigError, match=r"'some-org/some-model-that-is-not-cached'.*cannot reach the hub") as err:
        resolve_model_path("some-org/some-model-that-is-not-cached")
    assert time.time() - started < 10
    assert err.value.key == "model.name" and "HF_HUB_OFFLINE" in str(err.value)
