"""The label store never loses an acknowledged label; the widget writes through it."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jupyter_client
import pytest

from course_lib.errors import DataError
from course_lib.labeling import LabelingWidget, LabelStore, TornLineWarning, active_labels, render_message

pytestmark = pytest.mark.unit


def make_pair(pair_id: str, a: str = "short answer", b: str = "another answer", domain: str = "legal") -> dict:
    return {
        "id": pair_id,
        "domain": domain,
        "reference": json.dumps({"answer": "x"}),
        "prompt": [{"role": "user", "content": f"question {pair_id}"}],
        "response_a": [{"role": "assistant", "content": a}],
        "response_b": [{"role": "assistant", "content": b}],
    }


def file_lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_labels_are_appended_as_complete_json_lines(tmp_path):
    store = LabelStore(tmp_path / "labels" / "labels.jsonl")
    store.add("p1", "ana", "A", "cites the clause")
    store.add("p2", "ana", "tie")

    lines = [json.loads(line) for line in file_lines(store.path)]
    assert [(r["pair_id"], r["choice"], r["rationale"]) for r in lines] == [
        ("p1", "A", "cites the clause"),
        ("p2", "tie", ""),
    ]
    assert all(r["annotator"] == "ana" and r["action"] == "label" and r["timestamp"] for r in lines)
    assert [label["pair_id"] for label in store.labels("ana")] == ["p1", "p2"]


def test_add_rejects_unknown_choice_and_empty_annotator(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    with pytest.raises(ValueError, match="expected one of A, B, tie, skip"):
        store.add("p1", "ana", "C")
    with pytest.raises(ValueError, match="annotator id is empty"):
        store.add("p1", "  ", "A")
    assert not store.path.exists()


def test_undo_is_append_only_and_withdraws_the_latest_label(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.add("p1", "ana", "A")
    store.add("p2", "ana", "B")
    store.add("p1", "bo", "tie")
    before = store.path.read_bytes()

    assert store.undo("ana")["pair_id"] == "p2"
    assert store.path.read_bytes().startswith(before), "undo must append, never rewrite"
    assert [label["pair_id"] for label in store.labels("ana")] == ["p1"]
    assert store.labels("bo")[0]["choice"] == "tie", "one annotator's undo leaves others alone"
    assert store.undo("ana")["pair_id"] == "p1"
    assert store.undo("ana") is None
    assert store.labels("ana") == []


def test_relabel_replaces_and_undo_restores_the_earlier_label(tmp_path):
    store = LabelStore(tmp_path / "labels.jsonl")
    store.add("p1", "ana", "A", "first thought")
    store.add("p1", "ana", "B", "second thought")
    assert [(l["choice"], l["rationale"]) for l in store.labels("ana")] == [("B", "second thought")]
    store.undo("ana")
    assert [(l["choice"], l["rationale"]) for l in store.labels("ana")] == [("A", "first thought")]


def test_reopening_resumes_at_the_first_unlabeled_pair(tmp_path):
    pairs = [make_pair(f"p{i}") for i in range(4)]
    first = LabelStore(tmp_path / "labels.jsonl")
    first.add("p0", "ana", "A")
    first.add("p1", "ana", "skip")  # a skip is a decision: resume goes past it
    first.add("p3", "ana", "B")

    reopened = LabelStore(tmp_path / "labels.jsonl")
    assert reopened.first_unlabeled(pairs, "ana") == 2
    assert reopened.first_unlabeled(pairs, "bo") == 0
    reopened.add("p2", "ana", "tie")
    assert reopened.first_unlabeled(pairs, "ana") is None


def test_torn_last_line_is_reported_and_complete_lines_are_kept(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    for i in range(3):
        store.add(f"p{i}", "ana", "A", f"reason {i}")
    whole = json.dumps({"action": "label", "pair_id": "p3", "annotator": "ana", "choice": "B"})
    with open(path, "ab") as f:  # a power cut halfway through writing the fourth label
        f.write(whole[: len(whole) // 2].encode())

    reopened = LabelStore(path)
    with pytest.warns(TornLineWarning, match=r"labels.jsonl:4: torn line"):
        labels = reopened.labels()
    assert [label["pair_id"] for label in labels] == ["p0", "p1", "p2"]
    assert len(reopened.problems) == 1
    assert isinstance(reopened.problems[0], DataError) and reopened.problems[0].line == 4

    reopened.add("p3", "ana", "B")  # the next label starts on a fresh line, whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already reported once by this store: not again
        assert [label["pair_id"] for label in reopened.labels()] == ["p0", "p1", "p2", "p3"]
    assert reopened.problems[0].line == 4
    assert json.loads(file_lines(path)[-1])["pair_id"] == "p3"


def test_a_complete_but_malformed_line_is_an_error_naming_line_and_field(tmp_path):
    path = tmp_path / "labels.jsonl"
    LabelStore(path).add("p1", "ana", "A")
    with open(path, "a", encoding="utf-8") as f:
        bad = {"pair_id": "p2", "annotator": "ana", "choice": "maybe", "rationale": "", "timestamp": "t"}
        f.write(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match="choice is 'maybe'") as err:
        LabelStore(path).labels()
    assert (err.value.line, err.value.field) == (2, "choice")


def test_undo_that_names_the_wrong_pair_is_reported():
    records = [
        {"action": "label", "pair_id": "p1", "annotator": "ana", "choice": "A", "rationale": "", "timestamp": "t"},
        {"action": "undo", "pair_id": "p9", "annotator": "ana", "timestamp": "t"},
    ]
    with pytest.raises(DataError, match="names pair 'p9'"):
        active_labels(records)


def _label_concurrently(path: str, annotator: str, count: int) -> None:
    store = LabelStore(path)
    for i in range(count):
        store.add(f"p{i}", annotator, "A" if i % 2 else "B", f"{annotator} line {i} " + "x" * 200)
        if i % 5 == 4:
            store.undo(annotator)  # read-modify-append: must see a consistent file


def test_several_annotators_writing_at_once_do_not_corrupt_the_store(tmp_path):
    path = tmp_path / "labels.jsonl"
    annotators = [f"annotator-{n}" for n in range(4)]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_label_concurrently, args=(str(path), name, 40)) for name in annotators]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    lines = file_lines(path)
    assert len(lines) == 4 * (40 + 8)  # 40 labels and 8 undos each
    assert all(json.loads(line) for line in lines)
    store = LabelStore(path)
    assert store.problems == []
    for name in annotators:
        # every fifth label was undone right after it was given
        assert {label["pair_id"] for label in store.labels(name)} == {f"p{i}" for i in range(40) if i % 5 != 4}


def test_sigkill_while_labeling_loses_no_acknowledged_label(tmp_path):
    """A writer killed at an arbitrary moment keeps every label whose add() returned."""
    path = tmp_path / "labels.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from course_lib.labeling.store import LabelStore
        store = LabelStore({str(path)!r})
        for i in range(100000):
            store.add(f"p{{i}}", "ana", "A", "r" * 500)
            print(f"p{{i}}", flush=True)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = [writer.stdout.readline().strip() for _ in range(50)]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)  # the kill may land mid-write
        store = LabelStore(path)
        stored = [label["pair_id"] for label in store.labels("ana")]
    assert stored[: len(acknowledged)] == acknowledged
    assert len(store.problems) <= 1


KERNEL_CODE = """
from course_lib.labeling import LabelingWidget, LabelStore
pairs = {pairs!r}
widget = LabelingWidget(pairs, LabelStore({path!r}), annotator="ana")
widget.rationale.value = "A names the clause"
widget.choice_buttons["A"].click()
widget.choice_buttons["tie"].click()
widget.rationale.value = "B is safer"
widget.choice_buttons["B"].click()
import os
print("PID", os.getpid())
"""


def test_kill_9_of_the_kernel_between_labels_loses_nothing(tmp_path):
    path = tmp_path / "labels.jsonl"
    pairs = [make_pair(f"p{i}") for i in range(5)]
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        output = []
        reply = client.execute_interactive(
            KERNEL_CODE.format(pairs=pairs, path=str(path)),
            timeout=60,
            output_hook=lambda msg: output.append(msg["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        kernel_pid = int("".join(output).split("PID")[1].split()[0])
        os.kill(kernel_pid, signal.SIGKILL)
        deadline = time.time() + 30
        while manager.is_alive() and time.time() < deadline:
            time.sleep(0.1)
        assert not manager.is_alive()
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    store = LabelStore(path)
    assert [(l["pair_id"], l["choice"], l["rationale"]) for l in store.labels("ana")] == [
        ("p0", "A", "A names the clause"),
        ("p1", "tie", ""),
        ("p2", "B", "B is safer"),
    ]
    assert store.problems == []
    resumed = LabelingWidget(pairs, store, annotator="ana")
    assert resumed.current_pair["id"] == "p3"


# --- the widget, driven without a browser ---------------------------------------------------


def test_widget_clicks_write_labels_and_advance(tmp_path):
    pairs = [make_pair(f"p{i}") for i in range(3)]
    widget = LabelingWidget(pairs, LabelStore(tmp_path / "labels.jsonl"), annotator="ana")
    assert widget.current_pair["id"] == "p0"
    assert "question p0" in widget.prompt_view.value and "short answer" in widget.response_views["A"].value

    widget.rationale.value = "more precise"
    widget.choice_buttons["A"].click()
    assert widget.rationale.value == ""
    assert (widget.current_pair["id"], widget.progress.value, widget.progress_text.value) == ("p1", 1, "1 of 3 labeled")
    widget.choice_buttons["skip"].click()
    widget.choice_buttons["B"].click()

    assert widget.current_pair is None
    assert all(button.disabled for button in widget.choice_buttons.values())
    labels = widget.store.labels("ana")
    assert [(l["pair_id"], l["choice"], l["rationale"]) for l in labels] == [
        ("p0", "A", "more precise"),
        ("p1", "skip", ""),
        ("p2", "B", ""),
    ]


def test_widget_undo_shows_the_pair_again_with_its_rationale(tmp_path):
    pairs = [make_pair(f"p{i}") for i in range(3)]
    widget = LabelingWidget(pairs, LabelStore(tmp_path / "labels.jsonl"), annotator="ana")
    widget.choice_buttons["A"].click()
    widget.rationale.value = "B covers the edge case"
    widget.choice_buttons["B"].click()

    widget.undo_button.click()
    assert widget.current_pair["id"] == "p1"
    assert widget.rationale.value == "B covers the edge case"
    assert widget.progress.value == 1
    widget.choice_buttons["tie"].click()
    assert [(l["pair_id"], l["choice"]) for l in widget.store.labels("ana")] == [("p0", "A"), ("p1", "tie")]


def test_widget_keyboard_box_maps_keys_to_actions(tmp_path):
    pairs = [make_pair(f"p{i}") for i in range(3)]
    widget = LabelingWidget(pairs, LabelStore(tmp_path / "labels.jsonl"), annotator="ana")
    widget.key_box.value = "b"
    assert widget.key_box.value == "", "the box clears itself, ready for the next key"
    widget.key_box.value = "T"
    widget.key_box.value = "x"  # not a shortcut: ignored
    widget.key_box.value = "u"
    assert [(l["pair_id"], l["choice"]) for l in widget.store.labels("ana")] == [("p0", "B")]
    assert widget.current_pair["id"] == "p1"


def test_widget_needs_an_annotator_and_resumes_per_annotator(tmp_path):
    pairs = [make_pair(f"p{i}") for i in range(3)]
    store = LabelStore(tmp_path / "labels.jsonl")
    store.add("p0", "ana", "A")
    widget = LabelingWidget(pairs, store)
    widget.choice_buttons["A"].click()
    assert not store.labels("")
    assert "annotator id" in widget.status.value

    widget.annotator_box.value = "ana"
    assert widget.current_pair["id"] == "p1"
    widget.annotator_box.value = "bo"
    assert widget.current_pair["id"] == "p0"


def test_widget_reports_a_torn_store(tmp_path):
    path = tmp_path / "labels.jsonl"
    LabelStore(path).add("p0", "ana", "A")
    with open(path, "ab") as f:
        f.write(b'{"action": "label", "pair_')
    with pytest.warns(TornLineWarning):
        widget = LabelingWidget([make_pair("p0"), make_pair("p1")], LabelStore(path), annotator="ana")
    assert "torn line(s) at 2" in widget.status.value
    assert widget.current_pair["id"] == "p1"


def test_render_message_shows_code_as_code_and_escapes_html():
    rendered = render_message("Use this:\n```python\ndef f(x):\n    return x < 1\n```\n<script>alert(1)</script>")
    assert "<pre" in rendered and "def" in rendered
    assert "&lt;script&gt;" in rendered and "<script>" not in rendered
    bare_code = render_message("def add(a, b):\n    return a + b", domain="code")
    assert "<pre" in bare_code


def test_a_malformed_pairs_file_names_file_line_and_field(tmp_path):
    from course_lib.labeling import read_pairs

    good = {"id": "p1", "domain": "legal", "reference": "{}", "prompt": [{"role": "user", "content": "q"}],
            "response_a": [{"role": "assistant", "content": "a"}], "response_b": [{"role": "assistant", "content": "b"}]}
    path = tmp_path / "pairs.jsonl"
    path.write_bytes((json.dumps(good) + "\n").encode() + b'{"id": "p2", "domain": "le\xffgal"}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:2: not valid UTF-8"):
        read_pairs(path)
    bad_role = dict(good, id="p2", response_b=[{"role": "robot", "content": "b"}])
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad_role) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:2, field 'response_b\[0\].role': role is 'robot'"):
        read_pairs(path)
