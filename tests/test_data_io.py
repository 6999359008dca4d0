"""Loaders, validation with precise errors, atomic writes, and OpenAI exports."""
import json

import pytest

from course_lib.data import check_openai_record, export_openai, iter_records, load_records, save_records
from course_lib.errors import DataError

pytestmark = pytest.mark.unit

REF = json.dumps({"level": "urgent"})
SFT = {"id": "s1", "domain": "medical", "reference": REF,
       "messages": [{"role": "user", "content": "Fever for 3 days?"},
                    {"role": "assistant", "content": "Triage: urgent."}]}
PREF = {"id": "p1", "domain": "medical", "reference": REF,
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever for 3 days?"}],
        "chosen": [{"role": "assistant", "content": "Triage: urgent."}],
        "rejected": [{"role": "assistant", "content": "Triage: self-care."}]}


def write_lines(path, lines):
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def test_round_trip_jsonl_and_parquet(tmp_path):
    for suffix in (".jsonl", ".parquet"):
        path = save_records([SFT, {**SFT, "id": "s2"}], tmp_path / f"sft{suffix}")
        dataset = load_records(path, "sft", cache_dir=tmp_path / "cache")
        assert len(dataset) == 2 and dataset[0]["messages"] == SFT["messages"] and dataset[1]["id"] == "s2"


@pytest.mark.parametrize("line,field,message", [
    ('{"id": "x", "domain": "medical"', None, "bad JSON"),
    (json.dumps({k: v for k, v in SFT.items() if k != "reference"}), "reference", "missing field"),
    (json.dumps({**SFT, "messages": [{"role": "robot", "content": "hi"}]}), "messages[0].role", "unknown role"),
    (json.dumps({**SFT, "messages": [{"role": "user", "content": "  "}]}), "messages[0].content", "empty content"),
    (json.dumps({**SFT, "messages": [{"role": "user", "content": 7}]}), "messages[0].content", "expected a string"),
    (json.dumps({**SFT, "domain": "finance"}), "domain", "unknown domain"),
    (json.dumps({**SFT, "reference": "not json"}), "reference", "JSON object"),
    (json.dumps({**PREF, "chosen": [{"role": "user", "content": "x"}]}), "chosen[0].role", "unknown role"),
    (json.dumps([1, 2]), None, "expected a JSON object"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, field, message):
    first = PREF if '"chosen"' in line else SFT
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(first), line])
    with pytest.raises(DataError, match=message) as info:
        list(iter_records(path))
    err = info.value
    assert err.file == str(path) and err.line == 2 and err.field == field
    assert str(path) in str(err)


def test_non_utf8_bytes_are_reported_with_line(tmp_path):
    path = write_lines(tmp_path / "latin.jsonl", [json.dumps(SFT), b'{"id": "caf\xe9"}'])
    with pytest.raises(DataError, match="UTF-8") as info:
        load_records(path, cache_dir=tmp_path / "cache")
    assert info.value.line == 2


def test_mixed_kinds_duplicates_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="expected a sft record"):
        list(iter_records(write_lines(tmp_path / "mix.jsonl", [json.dumps(SFT), json.dumps(PREF)])))
    with pytest.raises(DataError, match="duplicate id"):
        list(iter_records(write_lines(tmp_path / "dup.jsonl", [json.dumps(SFT), json.dumps(SFT)])))
    with pytest.raises(DataError, match="no such file"):
        list(iter_records(tmp_path / "absent.jsonl"))
    with pytest.raises(DataError, match="unknown file type"):
        list(iter_records(write_lines(tmp_path / "data.csv", ["a,b"])))
    with pytest.raises(DataError, match="no records"):
        load_records(write_lines(tmp_path / "empty.jsonl", [""]), cache_dir=tmp_path / "cache")


def test_user_data_without_kit_columns(tmp_path):
    plain = {"messages": SFT["messages"]}
    path = write_lines(tmp_path / "plain.jsonl", [json.dumps(plain)])
    with pytest.raises(DataError, match="missing field"):
        list(iter_records(path))
    assert list(iter_records(path, kit_columns=False)) == [plain]


def test_failed_write_leaves_the_old_file_whole(tmp_path):
    path = save_records([SFT], tmp_path / "out.jsonl")
    before = path.read_bytes()

    def broken():
        yield SFT
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        save_records(broken(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_openai_exports_match_documented_shapes(tmp_path):
    sft_path = export_openai([SFT], tmp_path / "sft_openai.jsonl")
    sft = [json.loads(line) for line in sft_path.read_text().splitlines()]
    assert sft == [{"messages": SFT["messages"]}]
    check_openai_record(sft[0], "sft")
    source = save_records([PREF], tmp_path / "prefs.jsonl")
    pref = json.loads(export_openai(source, tmp_path / "pref_openai.jsonl").read_text())
    assert pref == {"input": {"messages": PREF["prompt"]}, "preferred_output": PREF["chosen"],
                    "non_preferred_output": PREF["rejected"]}
    check_openai_record(pref, "preference")
    with pytest.raises(DataError, match="preferred_output"):
        check_openai_record({**pref, "preferred_output": []}, "preference")
    with pytest.raises(DataError, match="only 'messages'"):
        check_openai_record({**sft[0], "id": "x"}, "sft")
