"""The DPO stage: the reference is the starting model, the loss is DPO's, training moves the adapter,
metrics are logged, a stopped run resumes, a finished one is a cache hit."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.data import ensure_curated_data
from course_lib.errors import ConfigError, MissingArtifactError
from course_lib.stages import DPOStageConfig, RunContext, SFTStageConfig, finish_dpo, make_dpo_trainer, run_dpo, run_sft
from training_callbacks import StopAt

pytestmark = pytest.mark.slow
SMALL = {"sft_per_domain": 24, "prefs_per_domain": 24, "eval_per_domain": 10}
QUICK = dict(batch_size=4, eval_prompts=3, max_new_tokens=8, logging_steps=1, progress=False)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_base_path):
    run = RunContext.create(tmp_path_factory.mktemp("dpo_run"), "tiny-cpu")
    ensure_curated_data(run.run_dir, seed=0, sizes=SMALL)
    run_sft(SFTStageConfig(max_steps=4, eval_prompts=0, save_steps=100, eval_steps=100, progress=False), run)
    return run


def sequence_logps(model, batch) -> torch.Tensor:
    """Sum of the completion tokens' log-probabilities, by hand; ``(2 * pairs,)``, chosen rows first."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # (rows, L-1, V)
    targets = batch["input_ids"][:, 1:]  # (rows, L-1): the token each position predicts
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1)


@pytest.mark.unit
def test_config_validates():
    with pytest.raises(ConfigError, match="loss_type"):
        DPOStageConfig(loss_type="kto")
    with pytest.raises(ConfigError, match="start_from"):
        DPOStageConfig(start_from="reward")
    with pytest.raises(ConfigError, match="beta"):
        DPOStageConfig(beta=0)


def test_the_reference_is_the_sft_model_and_the_loss_is_dpos(sft_run, tiny_base_path):
    """TRL's reference log-probs equal the SFT model's (not the bare base's), and its loss is DPO's formula."""
    from course_lib.models import load_model

    trainer = make_dpo_trainer(DPOStageConfig(max_steps=2, **QUICK), sft_run)
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    sft = load_model(sft_run.profile, str(sft_run.stage_dir("sft") / "merged"), for_training=False)
    base = load_model(sft_run.profile, str(tiny_base_path), for_training=False)
    with torch.no_grad():
        sft_logps, base_logps = sequence_logps(sft, batch), sequence_logps(base, batch)
        policy_logps = sequence_logps(trainer.model, batch)
    reference = torch.cat([ref_chosen, ref_rejected])
    assert torch.allclose(reference, sft_logps, atol=1e-3)
    assert not torch.allclose(reference, base_logps, atol=1e-1)

    # DPO's loss by hand: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged over pairs.
    pairs = len(ref_chosen)
    margin = (policy_logps[:pairs] - ref_chosen) - (policy_logps[pairs:] - ref_rejected)
    by_hand = -F.logsigmoid(trainer.args.beta * margin).mean()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
    assert float(trl_loss) == pytest.approx(float(by_hand), abs=1e-4)


def test_run_dpo_trains_measures_resumes_and_caches(sft_run):
    cfg = DPOStageConfig(max_steps=4, save_steps=2, **QUICK)
    with pytest.raises(KeyboardInterrupt):
        run_dpo(cfg, sft_run, callbacks=[StopAt(3)])
    assert not (sft_run.stage_dir("dpo") / "COMPLETE").exists()

    result = run_dpo(cfg, sft_run)
    m = result.metrics
    assert not result.skipped and m["resumed_from_step"] == 2 and m["global_step"] == 4
    out = sft_run.stage_dir("dpo")
    for name in ("adapter/adapter_config.json", "merged/config.json", "metrics.json", "config.yaml", "COMPLETE"):
        assert (out / name).exists(), name
    # The adapter moved (LoRA's B starts at zero), and what DPO reports was logged.
    from safetensors.torch import load_file

    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(float(w.abs().max()) > 0 for name, w in weights.items() if "lora_B" in name)
    assert 0.0 <= m["implicit_reward_accuracy"] <= 1.0 and m["implicit_reward_margin"] is not None
    # One logged entry per step: the checkpoint carried steps 1-2 over, the resumed run logged 3-4.
    assert [h["step"] for h in m["log_history"] if "rewards/margins" in h] == [1, 2, 3, 4]
    assert set(m["gold_gain"]) >= {"mean", "ci_low", "ci_high"} and m["gold_score_before"] is not None
    assert m["kl"] is not None and 0.0 <= m["eos_rate"] <= 1.0
    assert m["ledger"]["tokens"] > 0

    again = run_dpo(cfg, sft_run)
    assert again.skipped and again.metrics["global_step"] == 4
    # A changed setting re-runs the stage.
    assert not run_dpo(DPOStageConfig(max_steps=1, beta=0.5, **QUICK), sft_run).skipped


def test_an_sft_term_and_precomputed_reference_train(sft_run):
    variant = sft_run.variant("dpo-rpo")
    cfg = DPOStageConfig(max_steps=2, sft_weight=1.0, precompute_ref_log_probs=True, **{**QUICK, "eval_prompts": 0})
    trainer = make_dpo_trainer(cfg, variant)
    assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, 1.0]
    trainer.train()
    m = finish_dpo(trainer, cfg, variant).metrics
    assert m["gold_gain"] is None and m["global_step"] == 2


def test_starting_from_ppo_without_it_says_who_makes_it(sft_run):
    with pytest.raises(MissingArtifactError, match="04_ppo"):
        run_dpo(DPOStageConfig(start_from="ppo", **QUICK), sft_run.variant("no-ppo"))


def test_a_qlora_policy_is_merged_in_16_bits_not_into_its_4_bit_weights(tmp_path, tiny_base_path):
    """With a 4-bit profile, the DPO policy's merged/ holds full weights (no quantization config), like SFT's."""
    import json

    from course_lib.config import load_profile

    profile = load_profile("gpu-qlora", {
        "model.name": str(tiny_base_path), "device": "cpu", "model.max_seq_length": 256,
        "quantization.compute_dtype": "float32", "training.optim": "adamw_torch",
        "training.gradient_checkpointing": False, "training.per_device_batch_size": 4})
    run = RunContext.create(tmp_path, profile)
    ensure_curated_data(run.run_dir, seed=0, sizes=SMALL)
    run_sft(SFTStageConfig(max_steps=1, eval_prompts=0, save_steps=100, eval_steps=100, progress=False), run)
    run_dpo(DPOStageConfig(max_steps=1, save_steps=100, **{**QUICK, "eval_prompts": 0}), run)
    for stage in ("sft", "dpo"):
        config = json.loads((run.stage_dir(stage) / "merged" / "config.json").read_text())
        assert "quantization_config" not in config, stage
