"""Model and tokenizer loading: tiny base, local folders, offline hub ids, 4-bit QLoRA on CPU."""
from __future__ import annotations

import time
import warnings

import pytest
import torch

from course_lib.config import load_profile
from course_lib.errors import ConfigError
from course_lib.models import (
    add_lora,
    check_same_tokenizer,
    detect_device,
    load_model,
    load_tokenizer,
    resolve_model_path,
    tokenizer_fingerprint,
)

pytestmark = pytest.mark.unit


def test_tokenizer_marks_assistant_tokens(tiny_profile):
    tok = load_tokenizer(tiny_profile)
    chat = [{"role": "user", "content": "Name the clause."}, {"role": "assistant", "content": "Termination."}]
    enc = tok.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    learned = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(learned) == "Termination.<|im_end|>"
    assert tok.pad_token is not None and tok.eos_token == "<|im_end|>"


def test_local_folder_loads_and_missing_folder_is_clear(tiny_profile, tiny_base_path, tmp_path):
    assert resolve_model_path(str(tiny_base_path)) == str(tiny_base_path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model_path(str(empty))


def test_a_cpu_load_hides_the_per_model_bars_but_not_the_download_bars(tiny_profile, capsys):
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    load_model(tiny_profile, for_training=False)
    assert not transformers_logging.is_progress_bar_enabled()  # "Loading weights", "Writing model shards"
    assert not hub_utils.are_progress_bars_disabled()  # a model download still shows its progress
    assert "Loading weights" not in capsys.readouterr().err


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    with pytest.raises(ConfigError, match="hub id, the hub is offline"):
        resolve_model_path("some-org/some-model-that-is-not-cached")
    assert time.time() - started < 10


def test_full_precision_load_is_safetensors_and_no_remote_code(tiny_profile):
    model = load_model(tiny_profile, for_training=False)
    assert next(model.parameters()).dtype == torch.float32
    assert tiny_profile.model.trust_remote_code is False


def test_qlora_4bit_load_and_lora_training_steps_on_cpu(tiny_base_path):
    """The gpu-qlora recipe (NF4, double quant, LoRA on all linear layers) trains on CPU."""
    import bitsandbytes as bnb

    profile = load_profile(
        "gpu-qlora",
        {"device": "cpu", "model.name": str(tiny_base_path), "model.dtype": "float32",
         "quantization.compute_dtype": "float32", "training.gradient_checkpointing": False},
    )
    model = add_lora(load_model(profile), profile)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    tok = load_tokenizer(profile)
    batch = tok(["def add(a, b):\n    return a + b\n"] * 4, return_tensors="pt")
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.eval()
    with torch.no_grad():  # an evaluation pass first, as the stages run one before training
        model(**batch)
    model.train()
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
            losses.append(loss.item())
    # bitsandbytes repacks 4-bit weights for CPU inference after an eval pass; its kernel has no backward.
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                   for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert not [w for w in caught if "gemv_4bit" in str(w.message)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert len(changed) == len(trainable)


def test_sequence_classification_head_for_reward_models(tiny_profile):
    model = load_model(tiny_profile, num_labels=1)
    tok = load_tokenizer(tiny_profile)
    out = model(**tok(["a", "bb"], return_tensors="pt", padding=True))
    assert out.logits.shape == (2, 1)


def test_tokenizer_check_names_the_stages_that_differ(tiny_profile):
    tok = load_tokenizer(tiny_profile)
    fp = tokenizer_fingerprint(tok)
    check_same_tokenizer({"sft": fp, "reward": fp})
    tok.chat_template = tok.chat_template.replace("assistant", "bot")
    with pytest.raises(ConfigError, match="reward use tokenizer"):
        check_same_tokenizer({"sft": fp, "reward": tokenizer_fingerprint(tok)})


def test_device_detection():
    assert detect_device("cpu") == "cpu"
    assert detect_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU is visible"):
            detect_device("cuda")
