"""The embedded tiny base: shipped in half precision, reproducible from source, cached, and it learned."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from course_lib import tiny_base
from course_lib.tiny_base import TinyBaseConfig, build_tiny_base, check_rebuild, content_hash, corpus_documents

pytestmark = pytest.mark.unit
# A recipe small enough to build in seconds, for the build and cache tests.
MINI = TinyBaseConfig(stdlib_max_bytes=60_000, knowledge_chars_per_domain=3_000, vocab_size=400, hidden_size=32,
                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_steps=4, warmup_steps=1,
                      batch_size=4)


@pytest.fixture(scope="module")
def mini_base():
    return build_tiny_base(MINI, progress=False)


def test_the_shipped_base_is_safetensors_in_half_precision(tiny_base_path):
    from safetensors import safe_open

    names = {p.name for p in tiny_base_path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "build_info.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    with safe_open(str(tiny_base_path / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    info = json.loads((tiny_base_path / "build_info.json").read_text())
    assert info["parameters"] > 1_000_000 and info["config"] == dataclasses.asdict(TinyBaseConfig())


def test_half_precision_keeps_the_full_precision_losses(tiny_base_path):
    """Shipping float16 costs under 1% of loss on a probe text, and what loads is what was measured."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    info = json.loads((tiny_base_path / "build_info.json").read_text())
    recorded = info["probe_loss"]
    assert abs(recorded["float16"] - recorded["float32"]) / recorded["float32"] < 0.01
    tok = AutoTokenizer.from_pretrained(tiny_base_path)
    model = LlamaForCausalLM.from_pretrained(tiny_base_path, dtype=torch.float32).eval()
    assert tiny_base.probe_loss(model, tok) == pytest.approx(recorded["float16"], rel=1e-4)


def test_a_rebuild_from_source_matches_the_shipped_base():
    """Same tokenizer token for token, and the first pretraining steps' losses within 2% of the shipped build's."""
    report = check_rebuild(steps=21)
    if not report["comparable"]:
        pytest.skip(f"the shipped base was built on Python {report['built_with']}, whose standard library is part of "
                    f"the corpus; this is {report['this_python']}")
    assert report["same_tokenizer"]
    assert report["within_tolerance"], report


def test_build_writes_safetensors_tokenizer_and_build_info(mini_base):
    names = {p.name for p in mini_base.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "build_info.json"} <= names
    info = json.loads((mini_base / "build_info.json").read_text())
    assert info["content_hash"] == mini_base.name and info["python_version"]


def test_second_build_is_a_cache_hit(mini_base, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached tiny base must not be pretrained again")

    monkeypatch.setattr(tiny_base, "pretrain", no_training)
    monkeypatch.setattr(tiny_base, "train_tokenizer", no_training)
    assert build_tiny_base(MINI, progress=False) == mini_base


def test_content_hash_is_deterministic_and_tracks_inputs():
    cfg = MINI
    docs = corpus_documents(cfg)
    assert corpus_documents(cfg) == docs
    assert content_hash(cfg, docs) == content_hash(cfg, list(docs))
    assert content_hash(dataclasses.replace(cfg, seed=1), docs) != content_hash(cfg, docs)
    assert content_hash(cfg, docs[:-1]) != content_hash(cfg, docs)


def test_corpus_holds_kit_text_domain_knowledge_and_stdlib_source():
    docs = corpus_documents(MINI)
    assert any("reward model" in d for d in docs)
    assert any("clause" in d and "In other words" in d for d in docs)
    assert any("needs emergency care" in d for d in docs)
    assert sum("def " in d and "import " in d for d in docs) > 3


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        TinyBaseConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match="vocab_size"):
        TinyBaseConfig(vocab_size=100)


def test_pretraining_learned_the_corpus(tiny_base_path):
    """Loss fell far below chance, and the model predicts held-out Python better than a fresh one."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    info = json.loads((tiny_base_path / "build_info.json").read_text())
    losses = [h["loss"] for h in info["loss_history"]]
    chance = math.log(info["config"]["vocab_size"])
    assert losses[-1] < 0.6 * chance and losses[-1] < losses[0] - 3.0

    tok = AutoTokenizer.from_pretrained(tiny_base_path)
    trained = LlamaForCausalLM.from_pretrained(tiny_base_path, dtype=torch.float32).eval()
    torch.manual_seed(0)
    fresh = LlamaForCausalLM(trained.config).eval()
    held_out = "def clamp(value, low, high):\n    \"\"\"Return value limited to [low, high].\"\"\"\n    if value < low:\n        return low\n    return min(value, high)\n"
    ids = tok(held_out, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert trained(ids, labels=ids).loss < fresh(ids, labels=ids).loss - 2.0
