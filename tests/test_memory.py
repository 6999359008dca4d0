"""The memory planner: its arithmetic on known configs, against peft's own counts, and against a measured peak."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.config import load_profile
from course_lib.errors import ConfigError
from course_lib.memory import (
    KNOWN_CONFIGS, MemoryPlanConfig, _verdict, four_bit_bytes, gpu_fit_summary, gpu_fit_table, lora_parameters,
    model_shape, optimizer_bytes, plan_memory,
)

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
SMALL_LLAMA = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=160, vocab_size=300, tie_word_embeddings=False)


def test_the_shipped_hub_model_is_sized_offline_and_its_4bit_weights_are_a_quarter_of_bf16():
    shape = model_shape(QWEN)
    assert abs(shape.parameters - 494_032_768) < 1000  # the published count of Qwen2.5-0.5B
    plan = plan_memory("gpu-qlora", "sft")
    # NF4 with double quantization: 0.5 byte per weight + an 8-bit absmax per 64 + an fp32 per 256 absmaxes.
    per_weight = 0.5 + 1 / 64 + 4 / (64 * 256)
    assert four_bit_bytes(1_000_000, double_quant=True) == pytest.approx(1_000_000 * per_weight)
    assert four_bit_bytes(1_000_000, double_quant=False) == pytest.approx(1_000_000 * (0.5 + 4 / 64))
    # Prepared for training, the unquantized embedding and norms are fp32 (peft's prepare_model_for_kbit_training).
    expected = shape.linear_parameters * per_weight + shape.other_parameters * 4
    assert plan.parts["weights"] == pytest.approx(expected, rel=1e-6)
    assert plan.parts["weights"] < 0.75 * shape.parameters * 2  # well under the bf16 copy, the fp32 embedding included


def test_parameter_and_lora_counts_match_transformers_and_peft_on_a_tiny_model():
    import torch
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from course_lib.models import lora_config

    config = LlamaConfig(**{k: v for k, v in SMALL_LLAMA.items() if k != "model_type"})
    torch.manual_seed(0)
    shape = model_shape(config)
    assert shape.parameters == sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    for targets in ("all-linear", "q_proj,v_proj"):
        profile = load_profile("tiny-cpu", {"lora.r": 4, "lora.target_modules": targets})
        peft_model = get_peft_model(LlamaForCausalLM(config), lora_config(profile))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert lora_parameters(shape, 4, targets) == trainable
    # The reward model, where it trains an adapter: the adapter plus a trainable scalar head.
    profile = load_profile("tiny-cpu", {"lora.r": 4, "lora.reward": True})
    config.num_labels = 1
    reward = get_peft_model(LlamaForSequenceClassification(config), lora_config(profile, task_type="SEQ_CLS"))
    trainable = sum(p.numel() for p in reward.parameters() if p.requires_grad)
    assert plan_memory(profile, "reward", model=config).trainable == trainable
    whole = LlamaForSequenceClassification(config)  # trained whole (tiny-cpu): every weight and the head
    whole_plan = plan_memory(load_profile("tiny-cpu", {"lora.r": 4}), "reward", model=config)
    assert whole_plan.trainable == sum(p.numel() for p in whole.parameters())


def test_optimizer_state_bytes():
    assert optimizer_bytes("adamw_torch", [1000, 5000]) == 8 * 6000  # two fp32 moments
    assert optimizer_bytes("adamw_torch", [1000], value_bytes=2) == 4 * 1000  # moments in the bf16 weights' dtype
    eight_bit = optimizer_bytes("paged_adamw_8bit", [1_000_000])
    assert 2_000_000 < eight_bit < 2_010_000  # two 8-bit moments + one fp32 constant per 2048 values
    assert optimizer_bytes("paged_adamw_8bit", [1000]) == 8 * 1000  # small tensors stay in 32 bits
    assert optimizer_bytes("sgd", [1000]) == 0
    qlora = plan_memory("gpu-qlora", "sft")
    assert qlora.parts["optimizer"] < 0.3 * plan_memory(load_profile("gpu-qlora", {"training.optim": "adamw_torch"}),
                                                        "sft").parts["optimizer"]


def test_gradient_checkpointing_lowers_activations_and_nothing_else():
    off = plan_memory(load_profile("gpu-qlora", {"training.gradient_checkpointing": False}), "sft")
    on = plan_memory("gpu-qlora", "sft")
    assert on.parts["activations"] < 0.5 * off.parts["activations"]
    assert {k: v for k, v in on.parts.items() if k != "activations"} == \
        {k: v for k, v in off.parts.items() if k != "activations"}
    # Longer sequences cost more activation memory, not more weights (less than twice: the fused head's tile stays).
    longer = plan_memory("gpu-qlora", config=MemoryPlanConfig(stage="sft", seq_length=2048))
    assert longer.parts["activations"] > 1.4 * on.parts["activations"] and longer.parts["weights"] == on.parts["weights"]


@pytest.mark.parametrize("profile", ["tiny-cpu", "gpu-qlora"])
def test_dpo_and_ppo_hold_no_second_copy_for_the_reference(profile):
    sft, dpo, reward = (plan_memory(profile, stage) for stage in ("sft", "dpo", "reward"))
    assert dpo.parts["weights"] == sft.parts["weights"]  # the reference is the adapter switched off
    assert dpo.parts["activations"] > sft.parts["activations"]  # chosen and rejected: twice the sequences
    assert reward.parts["weights"] == sft.parts["weights"]
    # TRL runs the reference's no-grad pass after the policy's forward: precomputing its log-probs removes it.
    precomputed = plan_memory(profile, config=MemoryPlanConfig(stage="dpo", device="cpu", precompute_ref_log_probs=True))
    assert precomputed.parts["activations"] < plan_memory(profile, config=MemoryPlanConfig(stage="dpo", device="cpu")).parts["activations"]
    one, two = (plan_memory(profile, config=MemoryPlanConfig(stage="ppo", reward_members=n)) for n in (1, 2))
    member = two.parts["weights"] - one.parts["weights"]  # one frozen reward model: its weights, adapter and head
    # Policy (= reference), value model and one reward member: three copies, not four.
    assert one.parts["weights"] < 3 * sft.parts["weights"] + member * 1.01
    assert one.parts["weights"] > 2 * sft.parts["weights"]
    assert any("adapter off is the reference" in note for note in two.notes)


def test_the_fit_table_and_its_thresholds():
    capacity_16 = 16e9 / 2**30  # 14.9 GiB: a "16 GB" card, as sold
    assert _verdict(capacity_16 - 0.01, 10, 16) == "fits"
    assert _verdict(capacity_16 + 0.5, capacity_16 - 1.2, 16) == "tight"  # fits only without the 10% margin
    assert _verdict(capacity_16 + 5, capacity_16, 16) == "no"
    rows = gpu_fit_table("gpu-qlora")
    assert [r["stage"] for r in rows] == ["sft", "reward", "ppo", "dpo"]
    assert all(set(r) >= {"16 GB", "24 GB", "40 GB", "80 GB", "peak_gib", "needed_gib"} for r in rows)
    assert all(r["needed_gib"] > r["peak_gib"] + 1 for r in rows)  # the CUDA context and the margin
    assert rows[0]["16 GB"] == "fits"
    # A 7B-like model fully fine-tuned in bf16 with paged 8-bit AdamW: 2 (weights) + 2 (gradients) + 2 (two 8-bit
    # moments) bytes per parameter, plus a little activation memory under gradient checkpointing: no card under 80 GB.
    big = dict(SMALL_LLAMA, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
               intermediate_size=11008, vocab_size=32000)
    full = load_profile("gpu-qlora", {"quantization.load_in_4bit": False, "lora.enabled": False, "model.dtype": "bfloat16"})
    row = gpu_fit_table(full, model=big, stages=["sft"])[0]
    assert row["16 GB"] == row["24 GB"] == row["40 GB"] == "no" and row["80 GB"] == "fits"
    assert row["peak_gib"] == pytest.approx(6 * model_shape(big).parameters / 2**30, rel=0.1)
    line = gpu_fit_summary("gpu-qlora", "ppo")
    assert line.startswith("ppo on gpu-qlora") and "GB" in line and "\n" not in line
    # What the notebooks print: their own profile, then the shipped QLoRA one; a profile named twice once.
    lines = gpu_fit_summary([load_profile("tiny-cpu"), "gpu-qlora", "tiny-cpu"], "sft").splitlines()
    assert [line.split(" (")[0] for line in lines] == ["sft on tiny-cpu", "sft on gpu-qlora"]


def test_clear_errors_for_a_bad_stage_or_a_model_it_cannot_size(tmp_path):
    with pytest.raises(ConfigError, match="expected one of sft, reward, ppo, dpo") as err:
        plan_memory("tiny-cpu", "rlhf")
    assert err.value.key == "stage"
    with pytest.raises(ConfigError, match="cannot size 'nobody/no-such-model-xyz'") as err:
        plan_memory("tiny-cpu", model="nobody/no-such-model-xyz")
    assert err.value.key == "model.name"
    with pytest.raises(ConfigError, match="holds no config.json"):
        plan_memory("tiny-cpu", model=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64}))
    with pytest.raises(ConfigError, match="Llama-style"):
        plan_memory("tiny-cpu", model=tmp_path)
    assert QWEN in KNOWN_CONFIGS


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("memory_planner_benchmark", REPO / "benchmarks" / "memory_planner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_sft_prediction_is_within_25_percent_of_a_measured_peak():
    """One SFT run of the tiny base in a fresh process, measured as the benchmark measures it (kernel high-water mark)."""
    from course_lib.tiny_base import shipped_base_dir

    bench = _benchmark_module()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **bench.LIVE_MEMORY_ENV}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "memory_planner.py"), "--case", "tiny-base",
                          "--stage", "sft", "--folder", str(shipped_base_dir())],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["measured_bytes"]
    predicted = bench.predict("tiny-base", "sft", shipped_base_dir(), 0)["total_gib"] * 2**30
    assert abs(predicted - measured) / measured <= 0.25, (predicted / 2**20, measured / 2**20)


def test_a_reward_model_trained_whole_plans_every_weight_in_the_reward_stage_and_the_value_model():
    adapter, whole = (load_profile("tiny-cpu", {"lora.reward": flag}) for flag in (True, False))
    reward_a, reward_w = plan_memory(adapter, "reward"), plan_memory(whole, "reward")
    assert 0 < reward_w.trainable - reward_w.parameters <= 1024  # every weight and the scalar head
    assert reward_a.trainable < reward_w.trainable / 4
    assert reward_w.parts["lora"] < reward_a.parts["lora"] / 10  # the head alone
    assert reward_w.parts["optimizer"] > 4 * reward_a.parts["optimizer"]
    assert any("lora.reward is false" in note for note in reward_w.notes)
    assert plan_memory(whole, "sft").parts == plan_memory(adapter, "sft").parts  # the other stages keep their adapters
    ppo_a, ppo_w = plan_memory(adapter, "ppo"), plan_memory(whole, "ppo")
    # The value model: all its weights instead of the reward model's adapter and head.
    assert ppo_w.trainable - ppo_a.trainable == reward_w.trainable - reward_a.trainable
    assert ppo_w.parts["gradients"] > ppo_a.parts["gradients"] and ppo_w.parts["lora"] < ppo_a.parts["lora"]
    assert any("trained whole" in note for note in ppo_w.notes)


def test_the_qlora_memory_report_of_notebook_02_runs_on_the_tiny_profile(tiny_base_path):
    """Its 4-bit variant of tiny-cpu trains adapters only, whatever tiny-cpu does with its reward model."""
    from course_lib.models import qlora_memory_report

    report = qlora_memory_report(load_profile("tiny-cpu"))
    assert 0 < report["weights_4bit_mb"] < report["weights_full_mb"]
    assert report["qlora_train_mb"] < report["full_finetune_train_mb"]
