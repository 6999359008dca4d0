"""The export for verl and OpenRLHF, checked against what their dataset classes and reward hooks read.

verl: ``RLHFDataset`` (verl/utils/dataset/rl_dataset.py) loads the Parquet with ``datasets`` (Arrow
underneath, read here with pyarrow), hands ``row["prompt"]`` to the tokenizer's chat template and
``row["extra_info"]["index"]`` on as the sample index; its reward manager calls
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)``. OpenRLHF:
``preprocess_data`` of openrlhf/datasets/prompts_dataset.py and reward_dataset.py, reproduced
below line for line with the kit's tokenizer, and ``reward_func(queries, prompts, labels)``.
"""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from course_lib.atomic import atomic_write_jsonl
from course_lib.data.rl_export import (
    compute_score,
    export_rl,
    main,
    reply_of,
    reward_func,
    to_verl_row,
)
from course_lib.domains import DOMAINS, domain_module, gold_score
from course_lib.errors import DataError
from course_lib.models import load_tokenizer

pytestmark = pytest.mark.unit


def _pair(domain: str, task, index: int) -> dict:
    return {"id": f"{domain}-pref-{index}", "domain": domain, "reference": json.dumps(task.reference, sort_keys=True),
            "prompt": task.prompt, "chosen": [{"role": "assistant", "content": task.good}],
            "rejected": [{"role": "assistant", "content": next(iter(task.flawed.values()))}]}


@pytest.fixture(scope="module")
def tasks():
    """Two tasks of each domain, drawn by the domains' own generators."""
    rng = random.Random(0)
    return [(domain, domain_module(domain).sample_task(rng)) for domain in DOMAINS for _ in range(2)]


@pytest.fixture(scope="module")
def exported(tasks, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    pairs = [_pair(domain, task, i) for i, (domain, task) in enumerate(tasks)]
    atomic_write_jsonl(data / "prefs_train.jsonl", pairs[:4])
    atomic_write_jsonl(data / "prefs_val.jsonl", pairs[4:])
    atomic_write_jsonl(data / "eval_prompts.jsonl", [{k: p[k] for k in ("id", "domain", "reference", "prompt")}
                                                      for p in pairs[4:]])
    out = tmp_path_factory.mktemp("export") / "rl"
    return pairs, export_rl(data, out), out


@pytest.fixture(scope="module")
def tok(tiny_profile):
    return load_tokenizer(tiny_profile)


def test_the_export_writes_every_file_at_once(exported):
    _, written, out = exported
    assert sorted(written) == ["openrlhf/prefs_train.jsonl", "openrlhf/prefs_val.jsonl", "openrlhf/prompts_eval.jsonl",
                               "openrlhf/prompts_train.jsonl", "reward.py", "verl/train.parquet", "verl/val.parquet"]
    assert all(path.is_file() for path in written.values())
    assert not list(out.parent.glob(".*tmp*")), "no temporary folder left beside the export"


def test_verl_reads_typed_columns_and_chat_prompts(exported, tok):
    pairs, written, _ = exported
    table = pq.read_table(written["verl/train.parquet"])
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    assert table.schema.field("data_source").type == pa.string()
    assert table.schema.field("prompt").type == pa.list_(message)
    assert table.schema.field("ability").type == pa.string()
    assert table.schema.field("reward_model").type == pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
    assert table.schema.field("extra_info").type.field("index").type == pa.int64()
    rows = table.to_pylist()
    assert len(rows) == 4
    for index, (row, pair) in enumerate(zip(rows, pairs)):
        assert row["data_source"] == f"course_lib/{pair['domain']}" and row["ability"] == pair["domain"]
        assert row["reward_model"] == {"style": "rule", "ground_truth": pair["reference"]}
        assert row["extra_info"] == {"split": "train", "index": index, "id": pair["id"], "domain": pair["domain"]}
        # RLHFDataset: the messages go to the chat template as they are.
        text = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        assert pair["prompt"][-1]["content"] in text and text.endswith("<|im_start|>assistant\n")
    assert [r["extra_info"]["split"] for r in pq.read_table(written["verl/val.parquet"]).to_pylist()] == ["val"] * 2


def test_verl_reward_is_the_gold_judge(exported, tasks):
    _, written, _ = exported
    for row, (domain, task) in zip(pq.read_table(written["verl/train.parquet"]).to_pylist(), tasks):
        call = dict(data_source=row["data_source"], ground_truth=row["reward_model"]["ground_truth"],
                    extra_info=row["extra_info"])
        good = compute_score(solution_str=task.good, **call)
        assert good == gold_score(domain, task.reference, task.good).score
        assert good > compute_score(solution_str=next(iter(task.flawed.values())), **call)


def test_a_record_without_reference_asks_for_a_reward_model():
    row = to_verl_row({"id": "u1", "domain": "general", "reference": "", "prompt": [{"role": "user", "content": "Hi"}]},
                      "train", 0)
    assert row["reward_model"] == {"style": "model", "ground_truth": ""}
    with pytest.raises(DataError, match="need a reward model"):
        compute_score(row["data_source"], "Hello.", "")


def test_openrlhf_prompts_and_reward(exported, tasks, tok):
    _, written, _ = exported
    lines = [json.loads(line) for line in written["openrlhf/prompts_train.jsonl"].read_text().splitlines()]
    for data, (domain, task) in zip(lines, tasks):
        # prompts_dataset.preprocess_data(data, input_key="prompt", label_key="label", apply_chat_template=...)
        prompt = tok.apply_chat_template(data["prompt"], tokenize=False, add_generation_prompt=True)
        label = data["label"]
        assert data["datasource"] == f"course_lib/{domain}"
        # The executor decodes prompt and generated tokens together, special tokens kept.
        ids = tok(prompt, add_special_tokens=False)["input_ids"] + tok(task.good + "<|im_end|>",
                                                                       add_special_tokens=False)["input_ids"]
        query = tok.decode(ids, skip_special_tokens=False)
        assert reply_of(query, prompt) == task.good.strip()
        result = reward_func([query], [prompt], [label])
        assert result["rewards"].tolist() == pytest.approx([gold_score(domain, task.reference, task.good).score])
        assert result["scores"] is result["rewards"]


def test_openrlhf_pairs_cut_at_the_prompt(exported, tok):
    pairs, written, _ = exported
    lines = [json.loads(line) for line in written["openrlhf/prefs_train.jsonl"].read_text().splitlines()]
    for data, pair in zip(lines, pairs):
        assert set(data) == {"prompt", "chosen", "rejected", "id", "domain"}
        # reward_dataset.preprocess_data(data, prompt_key="prompt", chosen_key="chosen", rejected_key="rejected", ...)
        prompt = tok.apply_chat_template(data["prompt"], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(data["prompt"] + data["chosen"], tokenize=False)
        chosen = full[len(prompt):]
        rejected = tok.apply_chat_template(data["prompt"] + data["rejected"], tokenize=False)[len(prompt):]
        assert full.startswith(prompt)
        assert chosen.startswith(pair["chosen"][0]["content"]) and rejected.startswith(pair["rejected"][0]["content"])


def test_a_bad_record_stops_the_export_and_leaves_nothing(tmp_path, exported):
    data = tmp_path / "data"
    data.mkdir()
    pairs = exported[0]
    atomic_write_jsonl(data / "prefs_train.jsonl", pairs[:2])
    atomic_write_jsonl(data / "prefs_val.jsonl", [pairs[2], {**pairs[3], "chosen": "not a list"}])
    atomic_write_jsonl(data / "eval_prompts.jsonl", [{k: pairs[0][k] for k in ("id", "domain", "reference", "prompt")}])
    with pytest.raises(DataError, match=r"prefs_val.jsonl:2.*chosen"):
        export_rl(data, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_command_line_says_what_is_missing(tmp_path, capsys):
    assert main([str(tmp_path / "no_data"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "prefs_train.jsonl" in err and "notebook 01" in err and not (tmp_path / "out").exists()
