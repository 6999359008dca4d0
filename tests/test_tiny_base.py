"""The embedded tiny base: built offline, deterministic, cached by content hash, and it learned."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from course_lib import tiny_base
from course_lib.tiny_base import TinyBaseConfig, build_tiny_base, content_hash, corpus_documents

pytestmark = pytest.mark.unit


def test_build_writes_safetensors_tokenizer_and_build_info(tiny_base_path):
    names = {p.name for p in tiny_base_path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "build_info.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    info = json.loads((tiny_base_path / "build_info.json").read_text())
    assert info["content_hash"] == tiny_base_path.name
    assert info["parameters"] > 1_000_000


def test_second_build_is_a_cache_hit(tiny_base_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached tiny base must not be pretrained again")

    monkeypatch.setattr(tiny_base, "pretrain", no_training)
    monkeypatch.setattr(tiny_base, "train_tokenizer", no_training)
    assert build_tiny_base(progress=False) == tiny_base_path


def test_content_hash_is_deterministic_and_tracks_inputs():
    cfg = TinyBaseConfig()
    docs = corpus_documents(cfg)
    assert corpus_documents(cfg) == docs
    assert content_hash(cfg, docs) == content_hash(cfg, list(docs))
    assert content_hash(dataclasses.replace(cfg, seed=1), docs) != content_hash(cfg, docs)
    assert content_hash(cfg, docs[:-1]) != content_hash(cfg, docs)


def test_corpus_holds_kit_text_and_stdlib_source():
    docs = corpus_documents(TinyBaseConfig())
    assert any("reward model" in d for d in docs)
    assert sum("def " in d and "import " in d for d in docs) > 10


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
    assert losses[-1] < 0.7 * chance and losses[-1] < losses[0] - 2.0

    tok = AutoTokenizer.from_pretrained(tiny_base_path)
    trained = LlamaForCausalLM.from_pretrained(tiny_base_path).eval()
    torch.manual_seed(0)
    fresh = LlamaForCausalLM(trained.config).eval()
    held_out = "def clamp(value, low, high):\n    \"\"\"Return value limited to [low, high].\"\"\"\n    if value < low:\n        return low\n    return min(value, high)\n"
    ids = tok(held_out, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert trained(ids, labels=ids).loss < fresh(ids, labels=ids).loss - 2.0
