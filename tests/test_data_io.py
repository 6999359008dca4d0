"""Loaders, validation with precise errors, atomic writes, and OpenAI exports."""
import json

import pytest

from course_lib.data import (NEUTRAL_DOMAIN, check_openai_record, derived_id, export_openai, iter_records, load_records,
                             save_records)
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
    (json.dumps({**SFT, "messages": [{"role": "user", "content": "Fever?"}]}), "messages", "no assistant turn"),
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


def test_a_record_without_a_reference_may_name_any_domain(tmp_path):
    """An empty reference means no gold judge, so the domain need not be one of the kit's."""
    own = {**SFT, "domain": "finance", "reference": ""}
    assert list(iter_records(write_lines(tmp_path / "own.jsonl", [json.dumps(own)]))) == [own]


USER_SFT = {"messages": [{"role": "user", "content": "How do I reset my router?"},
                         {"role": "assistant", "content": "Unplug it for thirty seconds, then plug it back in."}]}


def test_user_records_get_stable_ids_a_domain_and_no_reference(tmp_path):
    completion = {"prompt": USER_SFT["messages"][:1], "completion": [{"role": "assistant", "content": "Hold reset."}]}
    named = {**USER_SFT, "id": 7, "domain": "support"}
    path = write_lines(tmp_path / "mine.jsonl", [json.dumps(USER_SFT), json.dumps(USER_SFT), json.dumps(completion),
                                                 json.dumps(named)])
    records = list(iter_records(path, "sft", default_domain=NEUTRAL_DOMAIN))
    first = derived_id(USER_SFT)
    assert [r["id"] for r in records] == [first, f"{first}-2", records[2]["id"], "7"]
    assert first.startswith("u-") and records[2]["messages"] == completion["prompt"] + completion["completion"]
    assert [r["domain"] for r in records] == [NEUTRAL_DOMAIN] * 3 + ["support"]
    assert all(r["reference"] == "" for r in records)
    # the same records from Parquet get the same ids: they hash the messages, not the file
    parquet = save_records([USER_SFT], tmp_path / "mine.parquet")
    assert next(iter_records(parquet, default_domain=NEUTRAL_DOMAIN))["id"] == first

    with_reference = {**USER_SFT, "reference": {"level": "urgent"}}  # a judge's reference needs a kit domain
    with pytest.raises(DataError, match="unknown domain 'general'") as info:
        list(iter_records(write_lines(tmp_path / "ref.jsonl", [json.dumps(with_reference)]), default_domain="general"))
    assert info.value.line == 1 and info.value.field == "domain"
    judged = next(iter_records(write_lines(tmp_path / "med.jsonl", [json.dumps(with_reference)]), default_domain="medical"))
    assert json.loads(judged["reference"]) == {"level": "urgent"}


def test_implicit_prompt_pairs_are_split_where_the_replies_differ(tmp_path):
    user = {"role": "user", "content": "Is it safe to run two antivirus tools?"}
    implicit = {"chosen": [user, {"role": "assistant", "content": "Better not: they slow each other down."}],
                "rejected": [user, {"role": "assistant", "content": "Sure, the more the merrier."}]}
    record = next(iter_records(write_lines(tmp_path / "pairs.jsonl", [json.dumps(implicit)]), "preference",
                               default_domain=NEUTRAL_DOMAIN))
    assert record["prompt"] == [user] and record["chosen"] == implicit["chosen"][1:]
    assert record["rejected"] == implicit["rejected"][1:]


def test_datasets_folders_load_like_files(tmp_path):
    import datasets

    datasets.Dataset.from_list([USER_SFT]).save_to_disk(str(tmp_path / "saved"))
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list([USER_SFT]),
                                   "test": datasets.Dataset.from_list([USER_SFT, USER_SFT])})
    splits.save_to_disk(str(tmp_path / "saved_dict"))
    loaded = load_records(tmp_path / "saved", "sft", default_domain=NEUTRAL_DOMAIN, cache_dir=tmp_path / "cache")
    assert loaded[0]["messages"] == USER_SFT["messages"] and loaded[0]["id"] == derived_id(USER_SFT)
    assert len(list(iter_records(tmp_path / "saved_dict", split="test", default_domain=NEUTRAL_DOMAIN))) == 2
    with pytest.raises(DataError, match="no split 'validation'"):
        list(iter_records(tmp_path / "saved_dict", split="validation", default_domain=NEUTRAL_DOMAIN))


def test_a_folder_where_a_file_is_expected_is_named(tmp_path):
    for folder in (tmp_path / "plain_folder", tmp_path / "looks_like.jsonl"):
        folder.mkdir()
        with pytest.raises(DataError, match="a folder, not a data file") as info:
            list(iter_records(folder))
        assert info.value.file == str(folder)
        with pytest.raises(DataError, match="a folder, not a data file"):
            load_records(folder, cache_dir=tmp_path / "cache")
        with pytest.raises(DataError, match="is a folder") as info:
            save_records([SFT], folder)
        assert info.value.file == str(folder)
        with pytest.raises(DataError, match="is a folder"):
            export_openai([SFT], folder)


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


def test_openai_export_of_plain_trl_files_and_what_it_refuses(tmp_path):
    """The kit's columns are optional; a record with nothing to fine-tune on stops the export at its line."""
    plain = write_lines(tmp_path / "my_sft.jsonl", [json.dumps(USER_SFT)])
    assert [json.loads(line) for line in export_openai(plain, tmp_path / "out.jsonl").read_text().splitlines()] == [USER_SFT]
    no_answer = {"messages": USER_SFT["messages"][:1]}
    ends_with_user = {"messages": USER_SFT["messages"] + [{"role": "user", "content": "And then?"}]}
    prompt_only = {"prompt": USER_SFT["messages"][:1]}
    for bad, field, message in ((no_answer, "messages", "no assistant turn"),
                                (ends_with_user, "messages", "last message must be the assistant's"),
                                (prompt_only, "prompt", "no answer to fine-tune on")):
        source = write_lines(tmp_path / "bad.jsonl", [json.dumps(USER_SFT), json.dumps(bad)])
        with pytest.raises(DataError, match=message) as info:
            export_openai(source, tmp_path / "bad_out.jsonl")
        assert (info.value.file, info.value.line, info.value.field) == (str(source), 2, field)
        assert not (tmp_path / "bad_out.jsonl").exists()  # nothing half-written
    with pytest.raises(DataError, match="no assistant turn") as info:
        export_openai([USER_SFT, no_answer], tmp_path / "from_dicts.jsonl")
    assert info.value.line == 2 and "record 2" in str(info.value)
