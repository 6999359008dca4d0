"""Learning signals on tiny-cpu, for three seeds: SFT learns the task, the reward model learns gold.

Margins are set well inside what the seeds give (measured values in the comments), so a
pass means the stages learn, not that a lucky seed passed.
"""
from __future__ import annotations

import shutil

import pytest

from course_lib.data import ensure_curated_data
from course_lib.stages import RewardStageConfig, RunContext, SFTStageConfig, run_reward, run_sft

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)
SFT_STEPS, REWARD_STEPS, EVAL_PROMPTS = 60, 40, 45


@pytest.fixture(scope="module")
def curated(tmp_path_factory, tiny_base_path):
    folder = tmp_path_factory.mktemp("curated")
    ensure_curated_data(folder, seed=0)
    return folder / "data"


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def trained(request, curated, tmp_path_factory):
    seed = request.param
    run_dir = tmp_path_factory.mktemp(f"signal_seed{seed}")
    shutil.copytree(curated, run_dir / "data")
    run = RunContext.create(run_dir, "tiny-cpu")
    sft = run_sft(SFTStageConfig(max_steps=SFT_STEPS, eval_prompts=EVAL_PROMPTS, seed=seed, save_steps=10_000, eval_steps=10_000), run)
    reward = run_reward(RewardStageConfig(max_steps=REWARD_STEPS, seed=seed, bootstrap_resamples=500), run)
    return sft.metrics, reward.metrics


def test_sft_lowers_held_out_loss(trained):
    sft, _ = trained
    assert sft["eval_loss"] < sft["base_eval_loss"] - 1.5


def test_sft_raises_the_gold_score_over_the_base_model(trained):
    sft, _ = trained
    assert sft["gold_score_after"] > sft["gold_score_before"] + 0.05


def test_sft_alone_does_not_saturate_the_gold_score(trained):
    """Flawed demonstrations cap what imitation reaches, leaving work for the preference stages."""
    sft, _ = trained
    assert sft["gold_score_after"] < 0.85


def test_reward_model_accuracy_against_gold_is_well_above_chance(trained):
    _, reward = trained
    assert reward["accuracy"] >= 0.75
    assert reward["accuracy_ci_low"] > 0.5


# --- The preference stages from the track's SFT model (issues 9, 10): DPO, RLOO and PPO raise the gold score ---
# One seed here (about 14 minutes of CI); benchmarks/preference_feasibility.py measures three
# (docs/preference_feasibility.md). The SFT and reward stages run at the track's budgets, so the
# preference stages start from the SFT model the track really gives.
PREF_SEED, PREF_EVAL_PROMPTS = 0, 150
ROLLOUT_TOKENS = 96  # the PPO stage's default max_new_tokens, chosen by its end-of-turn rate
RLOO_TRIAL = dict(steps=60, learning_rate=2.5e-4, beta=0.05, temperature=0.7, max_new_tokens=ROLLOUT_TOKENS)


@pytest.fixture(scope="module")
def preference_run(curated, tmp_path_factory):
    from course_lib.generation import balanced_sample, gold_evaluate
    from course_lib.data import load_records
    from course_lib.models import load_model, load_tokenizer

    run_dir = tmp_path_factory.mktemp("preference_run")
    shutil.copytree(curated, run_dir / "data")
    run = RunContext.create(run_dir, "tiny-cpu")
    run_sft(SFTStageConfig(seed=PREF_SEED, eval_prompts=0, progress=False), run)
    run_reward(RewardStageConfig(seed=PREF_SEED, ensemble_size=2, progress=False), run)  # PPO's reward: their mean
    merged = str(run.stage_dir("sft") / "merged")
    tok = load_tokenizer(run.profile, merged)
    evals = balanced_sample(list(load_records(run.data_file("eval_prompts.jsonl"))), PREF_EVAL_PROMPTS)
    sft = gold_evaluate(load_model(run.profile, merged, for_training=False), tok, evals, max_new_tokens=ROLLOUT_TOKENS)
    return run, tok, evals, sft


def _gain_over_sft(model, tok, evals, sft) -> dict:
    from course_lib.generation import gold_evaluate
    from course_lib.stats import paired_difference

    after = gold_evaluate(model, tok, evals, max_new_tokens=ROLLOUT_TOKENS)
    return paired_difference([r["score"] for r in after["rows"]], [r["score"] for r in sft["rows"]], seed=PREF_SEED)


def test_the_reward_models_read_the_question(preference_run):
    """The ensemble prefers a prompt's own good answer to another prompt's: 0.93, 0.85, 0.92 over three seeds, no
    domain under 0.76 (docs/preference_feasibility.md); as LoRA adapters on this base they scored about 0.5. And it
    prefers the good answer to its near miss (another triage level, another function name): 0.98, 0.93, 0.95, no
    domain under 0.89; without the near-miss pairs, an urgent case's answer lost to the emergency number."""
    import json

    run = preference_run[0]
    metrics = json.loads((run.stage_dir("reward") / "metrics.json").read_text())
    swap, near = metrics["answer_swap"], metrics["near_miss"]
    assert swap["own_preferred_rate"] >= 0.75 and min(swap["by_domain"].values()) >= 0.65, swap
    assert near["own_preferred_rate"] >= 0.85 and min(near["by_domain"].values()) >= 0.8, near


def test_dpo_raises_the_gold_score_over_sft(preference_run):
    """The DPO stage at its defaults (tiny-cpu: 30 steps of 16 pairs). Measured on three seeded pipelines from the
    400-step SFT model: +0.075, +0.047, +0.058, every CI above zero (docs/preference_feasibility.md, "The track's
    SFT budget: 400 steps")."""
    from course_lib.stages import DPOStageConfig, make_dpo_trainer

    run, tok, evals, sft = preference_run
    trainer = make_dpo_trainer(DPOStageConfig(seed=PREF_SEED, eval_prompts=0, progress=False), run.variant("dpo"))
    trainer.train()
    gain = _gain_over_sft(trainer.model, tok, evals, sft)
    assert gain["mean"] > 0.02 and gain["ci_low"] > 0, gain


def test_rloo_raises_the_gold_score_over_sft(preference_run, tmp_path):
    """TRL's RLOO, rewarded by the mean of the two reward models, 60 steps at 2.5e-4, from the 400-step SFT model:
    over three seeded pipelines +0.069, +0.037 and +0.055, every CI above zero (docs/preference_feasibility.md,
    "The track's SFT budget: 400 steps"; from the 200-step model this pipeline's CI touched zero). Its reward
    rises too."""
    from course_lib.trials import rloo_trial

    run, tok, evals, sft = preference_run
    trainer = rloo_trial(run, seed=PREF_SEED, out_dir=tmp_path, **RLOO_TRIAL)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]  # one per step
    assert len(rewards) == RLOO_TRIAL["steps"]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.3, rewards
    gain = _gain_over_sft(trainer.model, tok, evals, sft)
    assert gain["mean"] > 0.02 and gain["ci_low"] > 0, gain


# The habits SFT copies from its demonstrations and the preference pairs target (docs/data.md): a medical reply
# without its caveat or its format, unfenced code, a rambling legal answer. (domain, gold judge's part)
FORM_PARTS = (("medical", "safety"), ("medical", "format"), ("code", "format"), ("legal", "concision"))


def test_ppo_raises_the_gold_score_over_sft_at_bounded_kl(preference_run):
    """The kit's PPO at the stage's defaults (tiny-cpu: 20 iterations, KL coefficient 0.3): the reward models'
    score rises (by 1.1 to 1.4 over the three seeded pipelines), the KL stays bounded (0.7 to 1.0 nats over the
    last five iterations), the habits the reward encodes are fixed (the mean of the gold judge's form parts rises
    by 0.27 to 0.35) and the gold score rises over SFT's: +0.077 (+0.047, +0.106), +0.067 (+0.039, +0.095) and
    +0.059 (+0.034, +0.084), medical correctness 0.92 to 0.96 after (docs/preference_feasibility.md, "The track's
    SFT budget: 400 steps"). With SFT at 200 steps the same PPO cleared zero on one to three seeds of three.
    """
    from course_lib.generation import gold_evaluate
    from course_lib.stages import PPOStageConfig, make_ppo_trainer
    from course_lib.stats import paired_difference

    run, tok, evals, sft = preference_run
    trainer = make_ppo_trainer(PPOStageConfig(seed=PREF_SEED, progress=False), run.variant("ppo"))
    history = trainer.train()
    rewards = [h["reward"] for h in history]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.6, rewards
    assert sum(h["kl"] for h in history[-5:]) / 5 < 4.0, [h["kl"] for h in history]
    after = gold_evaluate(trainer.policy, tok, evals, max_new_tokens=ROLLOUT_TOKENS)

    def form(result) -> float:
        return sum(result["parts"][domain][part] for domain, part in FORM_PARTS) / len(FORM_PARTS)

    assert form(after) > form(sft) + 0.15, (sft["parts"], after["parts"])
    gain = paired_difference([r["score"] for r in after["rows"]], [r["score"] for r in sft["rows"]], seed=PREF_SEED)
    assert gain["mean"] > 0.03 and gain["ci_low"] > 0, gain


def test_sft_rollouts_end_at_the_rollout_settings(preference_run):
    """RL learns from whole replies: most sampled SFT replies end within the rollout budget."""
    from course_lib.rl import end_of_turn_rate
    from course_lib.models import load_model

    run, tok, evals, _ = preference_run
    model = load_model(run.profile, str(run.stage_dir("sft") / "merged"), for_training=False)
    rate = end_of_turn_rate(model, tok, [e["prompt"] for e in evals[:90]], temperature=RLOO_TRIAL["temperature"],
                            max_new_tokens=ROLLOUT_TOKENS)
    assert rate > 0.6, rate


def test_best_of_n_over_optimizes_a_weak_proxy_and_not_the_reward_models(preference_run):
    """Notebook 04's over-optimization lab at its defaults: best-of-n from 64 SFT replies to 12 medical and 12 code
    prompts, picked by a weak proxy (one reward model on a fifth of the pairs, 40 steps of 8, no answer-swap or
    near-miss pairs). The proxy's score of its pick rises with every doubling of n; the gold score of that pick
    turns down by n = 32 to 64, while notebook 03's models' pick keeps its lead. Measured from the 400-step SFT
    model on three seeded pipelines, three proxy seeds each (docs/preference_feasibility.md, "The track's SFT
    budget: 400 steps"): 9 of 9 passed every assertion below; the fall from the peak to the lower of n = 32 and 64
    was 0.012 to 0.157, the reward models' lead at n = 64 0.035 to 0.275. The rise before the peak is small from this
    SFT model (0 to 0.050): its replies are mostly right, so the proxy has little to add and much to get wrong.
    With SFT at 200 steps the pick rose by 0.036 to 0.090 before it fell ("A cheaper lab")."""
    from course_lib.stages import PPOStageConfig, make_ppo_trainer
    from course_lib.stages.reward import score_replies, train_weak_proxy
    from course_lib.stats import best_of_n

    run, tok, _, _ = preference_run
    proxy, _, _ = train_weak_proxy(run, share=0.2, steps=40, seed=PREF_SEED, batch_size=8)
    trainer = make_ppo_trainer(PPOStageConfig(seed=PREF_SEED, progress=False), run.variant("best-of-n"))
    records = [r for domain in ("medical", "code") for r in [p for p in trainer.prompts if p["domain"] == domain][:12]]
    samples = trainer.reference_samples(records, 64, progress=False)
    proxy_scores = score_replies(proxy, tok, records, samples["texts"], run.profile.model.max_seq_length)
    ns = [1, 2, 4, 8, 16, 32, 64]
    weak, strong = best_of_n(proxy_scores, samples["gold"], ns), best_of_n(samples["reward_model"], samples["gold"], ns)
    assert all(b["reward"] > a["reward"] for a, b in zip(weak, weak[1:])), weak
    gold = [row["gold"] for row in weak]
    assert min(gold[-2:]) < max(gold) - 0.01, gold
    assert strong[-1]["gold"] > gold[-1] + 0.02, (strong, weak)
