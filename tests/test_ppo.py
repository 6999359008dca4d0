"""The kit's PPO: the reference is the SFT model, a toy task is learned, a stopped run resumes, the value model reloads."""
from __future__ import annotations

import shutil

import pytest
import torch

from course_lib.data import ensure_curated_data
from course_lib.rl import token_logprobs
from course_lib.stages import (
    PPOStageConfig, PPOTrainer, RewardStageConfig, RunContext, SFTStageConfig, finish_ppo, make_ppo_trainer, run_ppo,
    run_reward, run_sft,
)
from course_lib.stages.base import last_checkpoint

pytestmark = pytest.mark.slow
SMALL = {"sft_per_domain": 24, "prefs_per_domain": 24, "eval_per_domain": 10}
QUICK = dict(batch_size=4, minibatch_size=2, max_new_tokens=12, eval_prompts=3, progress=False, ppo_epochs=1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_base_path):
    run = RunContext.create(tmp_path_factory.mktemp("ppo_run"), "tiny-cpu")
    ensure_curated_data(run.run_dir, seed=0, sizes=SMALL)
    run_sft(SFTStageConfig(max_steps=4, eval_prompts=0, save_steps=100, eval_steps=100, progress=False), run)
    run_reward(RewardStageConfig(max_steps=3, ensemble_size=2, length_probe_pairs=2, bootstrap_resamples=100,
                                 progress=False), run)
    return run


def test_config_validates():
    from course_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="minibatch_size"):
        PPOStageConfig(batch_size=6, minibatch_size=4)
    with pytest.raises(ConfigError, match="kl_estimator"):
        PPOStageConfig(kl_estimator="k2")
    with pytest.raises(ConfigError, match="temperature"):
        PPOStageConfig(temperature=0)


def test_the_reference_is_the_sft_model_not_the_bare_base(trained_run, tiny_base_path):
    """The policy's adapter switched off gives the SFT model's log-probs, not the base model's."""
    from course_lib.models import load_model

    trainer = make_ppo_trainer(PPOStageConfig(**QUICK), trained_run)
    batch, _ = trainer.rollout()
    reference = trainer.reference_logprobs(batch)
    sft = load_model(trained_run.profile, str(trained_run.stage_dir("sft") / "merged"), for_training=False)
    base = load_model(trained_run.profile, str(tiny_base_path), for_training=False)
    with torch.no_grad():
        sft_logprobs = token_logprobs(sft, batch, trainer.cfg.temperature)[0]
        base_logprobs = token_logprobs(base, batch, trainer.cfg.temperature)[0]
    mask = batch.response_mask.bool()
    assert torch.allclose(reference[mask], sft_logprobs[mask], atol=1e-4)
    assert not torch.allclose(reference[mask], base_logprobs[mask], atol=1e-2)
    # At the first rollout the fresh adapter is a no-op: the policy is still the SFT model, so KL is zero.
    assert torch.allclose(batch.extras["kl"], torch.zeros_like(batch.extras["kl"]), atol=1e-4)
    # The x-ray shows one row per real token of the reply, with every quantity PPO computed for it.
    from course_lib.rl import xray

    table = xray(batch, trainer.tokenizer, row=0)
    assert len(table) == int(batch.response_mask[0].sum())
    assert list(table.columns) == ["token", "logprobs", "ref_logprobs", "kl", "values", "rewards", "advantages", "returns"]
    assert table["advantages"].tolist() == pytest.approx(batch.extras["advantages"][0, :len(table)].tolist(), abs=1e-6)


def test_ppo_learns_a_toy_task(trained_run, tmp_path):
    """Reward = the share of the token budget a reply leaves unused: PPO must learn to end replies sooner."""
    from course_lib.data import load_records
    from course_lib.models import add_lora, load_model, load_tokenizer
    from course_lib.stages.ppo import load_value_model

    profile = trained_run.profile
    sft_dir = trained_run.stage_dir("sft") / "merged"
    torch.manual_seed(0)
    policy = add_lora(load_model(profile, str(sft_dir)), profile)
    prompts = [dict(r) for r in load_records(trained_run.data_file("prefs_train.jsonl"))]
    max_new = 24

    def brevity(records, texts):
        return [1 - min(len(trainer.tokenizer(t, add_special_tokens=False)["input_ids"]), max_new) / max_new for t in texts]

    cfg = PPOStageConfig(max_steps=20, batch_size=8, minibatch_size=4, max_new_tokens=max_new, missing_eos_penalty=0.0,
                         kl_coef=0.01, learning_rate=3e-3, ppo_epochs=2, temperature=1.0, progress=False)
    trainer = PPOTrainer(cfg, profile, policy, load_value_model(trained_run), None, load_tokenizer(profile, str(sft_dir)),
                         prompts, tmp_path / "checkpoints", reward_fn=brevity)
    history = trainer.train()
    first = sum(h["reward"] for h in history[:5]) / 5
    last = sum(h["reward"] for h in history[-5:]) / 5
    assert last > first + 0.1, [round(h["reward"], 3) for h in history]
    for key in ("reward", "gold", "kl", "entropy", "clip_fraction", "approx_kl", "ratio_mean", "ratio_max",
                "value_loss", "explained_variance", "response_length", "eos_rate", "policy_loss", "tests_passed",
                "elapsed_s"):
        assert key in history[-1]
    assert [h["elapsed_s"] for h in history] == sorted(h["elapsed_s"] for h in history)
    from course_lib.plots import rl_curves

    figure = rl_curves({"toy": history}, keys=("reward", "kl"), x="elapsed_s")
    assert len(figure.data) == 2 and len(figure.data[0].x) == len(history)


def test_dropout_is_off_so_an_update_starts_from_a_ratio_of_one(trained_run, tmp_path):
    """With a profile's LoRA dropout, the rollout and the first update must still see the same policy."""
    import dataclasses

    from course_lib.models import add_lora, load_model, load_tokenizer
    from course_lib.stages.ppo import load_value_model

    profile = trained_run.profile
    profile = dataclasses.replace(profile, lora=dataclasses.replace(profile.lora, dropout=0.3))
    sft_dir = trained_run.stage_dir("sft") / "merged"
    policy = add_lora(load_model(profile, str(sft_dir)), profile)
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in policy.modules())
    with torch.no_grad():  # a fresh adapter adds zero whatever its dropout does: give it weights, as after training
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    cfg = PPOStageConfig(**{**QUICK, "minibatch_size": 4})
    trainer = PPOTrainer(cfg, profile, policy, load_value_model(trained_run), None, load_tokenizer(profile, str(sft_dir)),
                         [{"prompt": [{"role": "user", "content": "Hello"}], "domain": "legal", "reference": None}] * 4,
                         tmp_path / "checkpoints", reward_fn=lambda records, texts: [0.0] * len(texts))
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0
                   for model in (trainer.policy, trainer.value_model) for m in model.modules())
    batch, _ = trainer.rollout()
    stats = trainer.update(batch)  # one minibatch, one epoch: the ratio is measured before any step
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and stats["clip_fraction"] == 0.0


@pytest.mark.parametrize("value_adapter", [False, True], ids=["value-model-whole", "value-model-adapter"])
def test_a_stopped_run_resumes_from_its_checkpoint_and_the_value_model_reloads(trained_run, value_adapter):
    from course_lib.config import load_profile
    from course_lib.rl import token_values
    from course_lib.stages.reward import load_score_model

    run = trained_run.variant(f"resume-{value_adapter}")
    if value_adapter:  # the reward model (the value model's start) as a LoRA adapter, as on a GPU profile
        run = RunContext(run_dir=run.run_dir, profile=load_profile("tiny-cpu", {"lora.reward": True}), parent=trained_run)
        run_reward(RewardStageConfig(max_steps=2, ensemble_size=2, length_probe_pairs=2, bootstrap_resamples=100,
                                     progress=False), run)
    cfg = PPOStageConfig(max_steps=4, save_steps=2, **QUICK)
    seen: list[int] = []

    def stop_at_three(stats):
        seen.append(stats["step"])
        if stats["step"] == 3:
            raise KeyboardInterrupt("stopped at iteration 3")

    with pytest.raises(KeyboardInterrupt):
        run_ppo(cfg, run, callbacks=[stop_at_three])
    checkpoint = last_checkpoint(run.stage_dir("ppo") / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    assert not (run.stage_dir("ppo") / "COMPLETE").exists()
    seen.clear()
    result = run_ppo(cfg, run, callbacks=[lambda stats: seen.append(stats["step"])])
    assert seen == [3, 4]  # only the iterations after the checkpoint ran again
    assert result.metrics["steps"] == 4 and len(result.metrics["history"]) == 4
    assert {"mean", "ci_low", "ci_high"} <= set(result.metrics["gold_gain"])
    assert run_ppo(cfg, run).skipped

    value_dir = result.output_dir / "value_model"
    assert (value_dir / ("adapter_model.safetensors" if value_adapter else "model.safetensors")).is_file()
    value_model = load_score_model(run.profile, trained_run.stage_dir("sft") / "merged", value_dir)
    trainer = make_ppo_trainer(PPOStageConfig(**QUICK), run)
    batch, _ = trainer.rollout()
    with torch.no_grad():
        values = token_values(value_model, batch)
    assert values.shape == batch.response_mask.shape and torch.isfinite(values).all()
    assert (result.output_dir / "merged" / "model.safetensors").is_file()


def test_finish_measures_gold_before_and_after_on_the_same_prompts(trained_run):
    run = trained_run.variant("finish")
    cfg = PPOStageConfig(max_steps=1, **QUICK)
    trainer = make_ppo_trainer(cfg, run)
    trainer.train()
    metrics = finish_ppo(trainer, cfg, run).metrics
    assert 0 <= metrics["gold_score_before"] <= 1 and 0 <= metrics["gold_score_after"] <= 1
    assert metrics["ledger"]["wall_seconds"] > 0 and metrics["samples"]
    shutil.rmtree(run.run_dir)


def test_an_ensemble_reward_is_the_members_mean_less_their_spread(trained_run):
    """reward_members averages the reward models; uncertainty_penalty subtracts their spread where they disagree."""
    import numpy as np

    from course_lib.stages.reward import load_reward_model, score_conversations

    cfg = PPOStageConfig(reward_members=2, uncertainty_penalty=1.5, missing_eos_penalty=0.0, **QUICK)
    trainer = make_ppo_trainer(cfg, trained_run)
    batch, stats = trainer.rollout()
    conversations = [p + [{"role": "assistant", "content": t}] for p, t in zip(batch.prompts, batch.texts)]
    each = np.stack([score_conversations(load_reward_model(trained_run, i), trainer.tokenizer, conversations,
                                         trained_run.profile.model.max_seq_length) for i in range(2)])
    assert not np.allclose(each[0], each[1])  # two members trained with different seeds disagree somewhere
    assert stats["reward"] == pytest.approx(float((each.mean(0) - 1.5 * each.std(0)).mean()), abs=1e-5)
    from course_lib.errors import MissingArtifactError

    with pytest.raises(MissingArtifactError, match="member_2"):
        make_ppo_trainer(PPOStageConfig(reward_members=3, **QUICK), trained_run)



def test_reference_samples_come_from_the_sft_model_scored_like_rollouts(trained_run):
    """Best-of-n's raw material: n replies per prompt from the SFT model (the adapter off), each scored by the reward
    models and the gold judge exactly as a rollout's replies are."""
    import numpy as np

    from course_lib.domains import gold_score
    from course_lib.stages.reward import ensemble_scores

    trainer = make_ppo_trainer(PPOStageConfig(**QUICK), trained_run)
    records = trainer.prompts[:2]
    torch.manual_seed(0)
    samples = trainer.reference_samples(records, 3, progress=False)
    with torch.no_grad():  # an adapter far from zero: the policy changes, the SFT model's samples do not
        for p in trainer.policy.parameters():
            if p.requires_grad:
                p.add_(1.0)
    torch.manual_seed(0)
    assert trainer.reference_samples(records, 3, progress=False)["texts"] == samples["texts"]
    assert len(samples["texts"]) == 2 and all(len(texts) == 3 for texts in samples["texts"])
    assert samples["reward_model"].shape == samples["gold"].shape == (2, 3)
    conversations = [r["prompt"] + [{"role": "assistant", "content": t}] for r, texts in zip(records, samples["texts"]) for t in texts]
    each = ensemble_scores(trainer.reward_models, trainer.tokenizer, conversations, trained_run.profile.model.max_seq_length)
    np.testing.assert_allclose(samples["reward_model"].ravel(), each.mean(axis=0), atol=1e-5)
    gold = [gold_score(r["domain"], r["reference"], t).score for r, texts in zip(records, samples["texts"]) for t in texts]
    np.testing.assert_allclose(samples["gold"].ravel(), gold)
