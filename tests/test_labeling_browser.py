"""The labeling notebook in a real browser: JupyterLab, headless Chromium, real clicks.

Starts JupyterLab on a copy of ``notebooks/labeling/label_preferences.ipynb`` whose
parameters point at a temporary store, runs all cells, clicks choices, types a
rationale, uses keyboard shortcuts (choice and undo), and checks that the store holds exactly
those labels. A screenshot lands in ``test-artifacts/``. Needs Debian's Chromium
(``scripts/install_browser.sh``); Playwright drives it, its own browser download is not used.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from playwright.sync_api import expect, sync_playwright

from course_lib.labeling import LabelStore

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "labeling" / "label_preferences.ipynb"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(420),
    # Locally a missing browser skips; in CI (which installs it first) it must fail instead.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's Chromium at /usr/bin/chromium: run scripts/install_browser.sh",
    ),
]


def make_pair(pair_id: str) -> dict:
    return {
        "id": pair_id,
        "domain": "code",
        "reference": json.dumps({"tests": []}),
        "prompt": [{"role": "user", "content": f"Write add(a, b) ({pair_id})."}],
        "response_a": [{"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"}],
        "response_b": [{"role": "assistant", "content": "def add(a, b):\n    return a - b"}],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_lab_settings(settings_dir: Path) -> None:
    """Start the kernel without asking, show no toasts, and never fetch news or updates (no network)."""
    settings = {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
        "notebook-extension/tracker": {"autoStartDefaultKernel": True},
    }
    for plugin, values in settings.items():
        path = settings_dir / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a folder holding the parameterized notebook and the pairs."""
    work = tmp_path / "work"
    work.mkdir()
    pairs_path = work / "pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(make_pair(f"p{i}")) + "\n" for i in range(4)))
    store_path = work / "labels.jsonl"
    notebook = parameterize_notebook(
        load_notebook_node(str(NOTEBOOK)),
        {
            "RUN_DIR": str(work / "run"),
            "PAIRS_PATH": str(pairs_path),
            "STORE_PATH": str(store_path),
            "ANNOTATOR": "browser-tester",
        },
    )
    nbformat.write(notebook, work / "label_preferences.ipynb")

    jupyter_env = tmp_path / "jupyter"
    quiet_lab_settings(jupyter_env / "settings")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(jupyter_env / "config"),
        "JUPYTER_DATA_DIR": str(jupyter_env / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter_env / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(jupyter_env / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(jupyter_env / "workspaces"),
    }
    port, token = free_port(), "labeling-test"
    log = open(tmp_path / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
            "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
        ],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield {
            "url": f"{base}/lab/tree/label_preferences.ipynb?token={token}",
            "store": store_path,
            "log": tmp_path / "jupyterlab.log",
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: it and its kernel
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def wait_for_records(path: Path, count: int, timeout: float = 30) -> None:
    """Each click must reach the store before the next one: wait for its line."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text(encoding="utf-8").splitlines()) >= count:
            return
        time.sleep(0.1)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    raise AssertionError(f"expected {count} store records, found {len(lines)}: {lines}")


def test_clicks_in_the_rendered_widget_land_in_the_store(lab):
    store_path = lab["store"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(lab["url"])
            page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
            # Run All is only wired to a kernel once it is connected and idle.
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=120_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            widget = page.locator(".labeling-widget")
            widget.wait_for(timeout=120_000)

            def expect_pair(pair_id: str) -> None:
                widget.get_by_role("heading", name=f"Pair {pair_id} ").wait_for(timeout=30_000)

            expect_pair("p0")
            widget.locator(".labeling-rationale textarea").fill("A adds, B subtracts")
            widget.locator(".labeling-choice-A").click()
            wait_for_records(store_path, 1)

            expect_pair("p1")
            keys = widget.locator(".labeling-keys input")
            keys.press_sequentially("b")  # a shortcut key JupyterLab itself binds in command mode
            wait_for_records(store_path, 2)

            expect_pair("p2")
            rationale = widget.locator(".labeling-rationale textarea")
            rationale.fill("changed my mind")
            widget.locator(".labeling-choice-tie").click()
            wait_for_records(store_path, 3)
            keys.press_sequentially("u")  # undo: p2 comes back with its rationale
            wait_for_records(store_path, 4)
            expect_pair("p2")
            # Widget updates reach the page asynchronously: wait for the value, don't read it once.
            expect(rationale).to_have_value("changed my mind", timeout=30_000)
            rationale.fill("")
            widget.locator(".labeling-choice-skip").click()
            wait_for_records(store_path, 5)

            expect_pair("p3")
            widget.get_by_text("3 of 4 labeled").wait_for(timeout=30_000)
            widget.screenshot(path=str(ARTIFACTS / "labeling_widget.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "labeling_widget_failure.png"), full_page=True)
            shutil.copy(lab["log"], ARTIFACTS / "labeling_jupyterlab.log")
            raise
        finally:
            browser.close()

    raw = [json.loads(line) for line in store_path.read_text(encoding="utf-8").splitlines()]
    assert [(r["action"], r["pair_id"]) for r in raw] == [
        ("label", "p0"), ("label", "p1"), ("label", "p2"), ("undo", "p2"), ("label", "p2"),
    ]
    labels = LabelStore(store_path).labels()
    assert [(l["annotator"], l["pair_id"], l["choice"], l["rationale"]) for l in labels] == [
        ("browser-tester", "p0", "A", "A adds, B subtracts"),
        ("browser-tester", "p1", "B", ""),
        ("browser-tester", "p2", "skip", ""),
    ]
