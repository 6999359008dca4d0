"""The SFT and reward-model stages on small data: outputs, resume, caching, and bad inputs."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import TrainerCallback

from course_lib.data import ensure_curated_data
from course_lib.errors import ConfigError, DataError, MissingArtifactError
from course_lib.data import load_records
from course_lib.stages import (STAGES, RewardStageConfig, RunContext, SFTStageConfig, finish_sft, make_reward_trainer,
                               make_sft_trainer, register_stage, run_reward, run_sft)
from course_lib.stages.reward import train_reward_model
from training_callbacks import StopAt

pytestmark = pytest.mark.slow
SMALL = {"sft_per_domain": 24, "prefs_per_domain": 24, "eval_per_domain": 10}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, tiny_base_path):
    run_dir = tmp_path_factory.mktemp("small_data")
    ensure_curated_data(run_dir, seed=0, sizes=SMALL)
    return run_dir / "data"


def new_run(tmp_path, small_data) -> RunContext:
    shutil.copytree(small_data, tmp_path / "data")
    return RunContext.create(tmp_path, "tiny-cpu")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small_data):
    run = new_run(tmp_path_factory.mktemp("trained"), small_data)
    run_sft(SFTStageConfig(max_steps=4, eval_prompts=3, max_new_tokens=8, save_steps=2, logging_steps=1), run)
    return run


class CountSteps(TrainerCallback):
    """Records the optimizer steps trained in this process."""

    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


@pytest.mark.unit
def test_configs_validate():
    with pytest.raises(ConfigError, match="max_steps"):
        SFTStageConfig(max_steps=0)
    with pytest.raises(ConfigError, match="packing or padding_free"):
        SFTStageConfig(packing=True, padding_free=True)
    with pytest.raises(ConfigError, match="kfold"):
        RewardStageConfig(kfold=1)
    with pytest.raises(ConfigError, match="ensemble_size"):
        RewardStageConfig(ensemble_size=0)


@pytest.mark.unit
def test_registry_holds_the_stages_and_rejects_duplicates():
    assert list(STAGES)[:4] == ["sft", "reward", "ppo", "dpo"]
    with pytest.raises(ValueError, match="already registered"):
        register_stage("sft", run_sft, SFTStageConfig, inputs=lambda cfg, run: {})


def test_sft_writes_its_artifacts_and_is_cached(trained_run):
    out = trained_run.stage_dir("sft")
    for name in ("COMPLETE", "config.yaml", "metrics.json", "stage_info.json", "adapter/adapter_model.safetensors",
                 "merged/model.safetensors", "merged/tokenizer.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    ledger = metrics["ledger"]
    assert ledger["tokens"] > 0 and ledger["wall_seconds"] > 0 and ledger["peak_memory_mb"] > 0 and ledger["estimated_flops"] > 0
    assert 0 < ledger["trainable_parameters"] < ledger["parameters"]
    assert any("loss" in h for h in metrics["log_history"])
    again = run_sft(SFTStageConfig(max_steps=4, eval_prompts=3, max_new_tokens=8, save_steps=2, logging_steps=1), trained_run)
    assert again.skipped and again.metrics == metrics


def test_sft_resumes_a_stopped_run_from_its_checkpoint(tmp_path, small_data):
    run = new_run(tmp_path, small_data)
    cfg = SFTStageConfig(max_steps=6, save_steps=3, eval_steps=3, eval_prompts=2, max_new_tokens=4, logging_steps=1)
    with pytest.raises(KeyboardInterrupt):
        run_sft(cfg, run, callbacks=[StopAt(5)])
    out = run.stage_dir("sft")
    assert not (out / "COMPLETE").exists() and (out / "checkpoints" / "checkpoint-3").is_dir()
    counter = CountSteps()
    result = run_sft(cfg, run, callbacks=[counter])
    assert result.metrics["resumed_from_step"] == 3
    assert result.metrics["global_step"] == 6
    assert counter.steps == [4, 5, 6]  # only the steps after the checkpoint were trained again


def test_reward_stage_outputs_and_metrics(trained_run):
    result = run_reward(RewardStageConfig(max_steps=3, ensemble_size=2, kfold=2, bootstrap_resamples=200, length_probe_pairs=4), trained_run)
    m = result.metrics
    assert 0 <= m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"] <= 1
    assert len(m["member_accuracy"]) == 2 and m["kfold"]["folds"] == 2 and len(m["kfold"]["accuracy"]) == 2
    assert set(m["length_bias"]) >= {"spearman_reward_vs_length", "longer_preferred_rate"}
    swap = m["answer_swap"]  # each prompt's own good answer against the next same-domain prompt's
    assert swap["pairs"] > 0 and 0 <= swap["own_preferred_rate"] <= 1 and set(swap["by_domain"]) <= {"code", "legal", "medical"}
    near = m["near_miss"]  # each prompt's good answer against the same answer at another level / function name
    assert near["pairs"] > 0 and 0 <= near["own_preferred_rate"] <= 1 and set(near["by_domain"]) <= {"code", "medical"}
    trade = m["fact_over_form"]  # each prompt's form slip against its near miss
    assert trade["pairs"] == near["pairs"] and set(trade["by_domain"]) == set(near["by_domain"])
    assert len(m["calibration"]["predicted"]) == len(m["calibration"]["observed"]) and 0 <= m["calibration"]["ece"] <= 1
    rows = [json.loads(line) for line in (result.output_dir / "pair_scores.jsonl").read_text().splitlines()]
    assert rows and all(len(r["margins"]) == 2 for r in rows)
    assert (result.output_dir / "member_1" / "model.safetensors").is_file()  # tiny-cpu trains reward models whole


def test_scores_come_back_in_the_conversations_order(trained_run):
    """Scoring batches by length must not mix up whose score is whose."""
    from course_lib.data import load_records
    from course_lib.models import load_tokenizer
    from course_lib.stages.reward import score_conversations, train_reward_model

    sft_dir = trained_run.artifact("sft", "merged", "02_sft")
    tok = load_tokenizer(trained_run.profile, str(sft_dir))
    pairs = [dict(p) for p in load_records(trained_run.data_file("prefs_val.jsonl"), "preference")][:6]
    model = train_reward_model(RewardStageConfig(max_steps=2), trained_run, pairs, seed=0)[0]
    conversations = [p["prompt"] + p[side] for p in pairs for side in ("chosen", "rejected")]
    assert len({len(str(c)) for c in conversations}) > 1  # lengths differ, so the batches are reordered
    one_by_one = [score_conversations(model, tok, [c], 256)[0] for c in conversations]
    assert score_conversations(model, tok, conversations, 256, batch_size=4) == pytest.approx(one_by_one, abs=1e-4)
    assert score_conversations(model, tok, [], 256).shape == (0,)
    # A repeated conversation (best-of-n samples repeat) is scored once and its score given to every copy.
    repeated = [conversations[i] for i in (3, 0, 3, 5, 0, 3)]
    assert list(score_conversations(model, tok, repeated, 256, batch_size=4)) == pytest.approx(
        [one_by_one[i] for i in (3, 0, 3, 5, 0, 3)], abs=1e-4)


def test_the_weak_proxy_learns_from_a_share_of_the_pairs_and_scores_replies_per_record(trained_run):
    """Notebook 04's over-optimization lab: a reward model on a fifth of the pairs, scoring n replies per prompt."""
    from course_lib.models import load_tokenizer
    from course_lib.stages.reward import preference_rows, score_conversations, score_replies, train_weak_proxy

    with pytest.raises(ValueError, match="share must be in"):
        train_weak_proxy(trained_run, share=0, steps=1, seed=0, batch_size=8)
    proxy, used, total = train_weak_proxy(trained_run, share=0.2, steps=1, seed=0, batch_size=8)
    assert total == len(preference_rows(trained_run, "prefs_train.jsonl")) and used == max(1, round(0.2 * total))
    tok = load_tokenizer(trained_run.profile, str(trained_run.artifact("sft", "merged", "02_sft")))
    records = [{"prompt": [{"role": "user", "content": question}]} for question in ("Is it urgent?", "Write squares.")]
    replies = [["Yes.", "No, rest.", "Call 911."], ["def squares(n): ...", "I cannot.", "Here:"]]
    scores = score_replies(proxy, tok, records, replies, 256)
    assert scores.shape == (2, 3)
    flat = score_conversations(proxy, tok, [r["prompt"] + [{"role": "assistant", "content": t}]
                                            for r, texts in zip(records, replies) for t in texts], 256)
    assert scores.ravel() == pytest.approx(flat, abs=1e-5)
    with pytest.raises(ValueError, match="same number of replies"):
        score_replies(proxy, tok, records, [replies[0], replies[1][:2]], 256)


def test_scoring_cuts_at_the_training_length_and_says_so(trained_run):
    from course_lib.models import load_tokenizer
    from course_lib.stages.reward import score_conversations

    tok = load_tokenizer(trained_run.profile, str(trained_run.artifact("sft", "merged", "02_sft")))
    model = train_reward_model(RewardStageConfig(max_steps=1), trained_run,
                               [dict(p) for p in load_records(trained_run.data_file("prefs_val.jsonl"), "preference")][:4],
                               seed=0)[0]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there."}]
    long = [short[0], {"role": "assistant", "content": "Hello there. " + "word " * 400}]
    with pytest.warns(UserWarning, match="1 of 2 conversations are longer than max_length=32"):
        scores = score_conversations(model, tok, [short, long], 32)
    cut = [short[0], {"role": "assistant", "content": "Hello there. " + "word " * 40}]
    with pytest.warns(UserWarning, match="1 of 1 conversations"):  # also longer than 32 tokens: cut the same way
        cut_score = score_conversations(model, tok, [cut], 32)[0]
    assert scores[1] == pytest.approx(cut_score, abs=1e-5)


def test_bradley_terry_by_hand_equals_the_trainer(trained_run):
    trainer = make_reward_trainer(RewardStageConfig(max_steps=1), trained_run, progress=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model.eval()
    with torch.no_grad():
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        r_chosen, r_rejected = rewards.chunk(2)
        by_hand = -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()
        by_hand += trainer.args.center_rewards_coefficient * ((r_chosen + r_rejected) ** 2).mean()
        assert torch.allclose(by_hand, trainer.compute_loss(model, dict(batch)), atol=1e-6)


def test_answer_swap_pairs_set_a_prompts_good_answer_against_another_prompts(trained_run):
    from course_lib.stages.reward import answer_swap_pairs, preference_rows

    rows = preference_rows(trained_run, "prefs_train.jsonl")
    by_id = {r["id"]: r for r in rows}
    fixed, drawn = answer_swap_pairs(rows), answer_swap_pairs(rows, seed=0)
    for swaps in (fixed, drawn):
        assert len(swaps) >= 0.8 * len(rows)
        for swap in swaps:
            own = by_id[swap["id"].removesuffix("-swap")]
            assert swap["prompt"] == own["prompt"] and swap["chosen"] == own["chosen"] and swap["domain"] == own["domain"]
            others = [r for r in rows if r["domain"] == own["domain"] and r["prompt"] != own["prompt"]]
            assert swap["rejected"] != own["chosen"] and swap["rejected"] in [r["chosen"] for r in others]
    assert answer_swap_pairs(rows, seed=0) == drawn and drawn != fixed


def test_near_miss_pairs_set_a_prompts_good_answer_against_a_near_miss_of_it(trained_run):
    from course_lib.domains import gold_preference
    from course_lib.stages.reward import near_miss_pairs, preference_rows

    rows = preference_rows(trained_run, "prefs_train.jsonl")
    by_id = {r["id"]: r for r in rows}
    misses = near_miss_pairs(rows, seed=0)
    assert {m["domain"] for m in misses} == {"medical", "code"}
    assert len(misses) >= 0.8 * sum(r["domain"] != "legal" for r in rows)
    for miss in misses:
        own = by_id[miss["id"].removesuffix("-near")]
        assert miss["prompt"] == own["prompt"] and miss["chosen"] == own["chosen"] and miss["rejected"] != own["chosen"]
    for miss in misses[::10]:  # the gold judge agrees (code runs in the sandbox, so a sample)
        assert gold_preference(miss["domain"], miss["reference"], miss["chosen"][-1]["content"],
                               miss["rejected"][-1]["content"]) == 1
    assert near_miss_pairs(rows, seed=0) == misses and near_miss_pairs(rows, seed=1) != misses


def test_fact_over_form_pairs_set_a_form_slip_above_the_near_miss(trained_run):
    from course_lib.domains import gold_preference
    from course_lib.stages.reward import fact_over_form_pairs, near_miss_pairs, preference_rows

    rows = preference_rows(trained_run, "prefs_train.jsonl")
    misses = {m["id"].removesuffix("-near"): m for m in near_miss_pairs(rows, seed=0)}
    trades = fact_over_form_pairs(rows, seed=0)
    assert {t["domain"] for t in trades} == {"medical", "code"} and len(trades) == len(misses)
    for trade in trades:
        miss = misses[trade["id"].removesuffix("-trade")]
        assert trade["prompt"] == miss["prompt"] and trade["rejected"] == miss["rejected"]  # the same near miss
        slip = trade["chosen"][-1]["content"]
        assert slip != miss["chosen"][-1]["content"] and slip in miss["chosen"][-1]["content"]  # the good answer, less its habit
    for trade in trades[::10]:
        assert gold_preference(trade["domain"], trade["reference"], trade["chosen"][-1]["content"],
                               trade["rejected"][-1]["content"]) == 1


def test_form_kept_pairs_set_a_near_miss_above_itself_without_its_form(trained_run):
    """The counterweight of the trade-off pairs: the habit still counts where the fact is wrong."""
    from course_lib.domains import gold_preference
    from course_lib.stages.reward import form_kept_pairs, near_miss_pairs, preference_rows

    rows = preference_rows(trained_run, "prefs_train.jsonl")
    misses = {m["id"].removesuffix("-near"): m for m in near_miss_pairs(rows, seed=0)}
    kept = form_kept_pairs(rows, seed=0)
    assert {k["domain"] for k in kept} == {"medical", "code"} and len(kept) == len(misses)
    for pair in kept:
        miss = misses[pair["id"].removesuffix("-form")]
        assert pair["prompt"] == miss["prompt"] and pair["chosen"] == miss["rejected"]  # the near miss itself
        bare = pair["rejected"][-1]["content"]
        assert bare != miss["rejected"][-1]["content"] and bare in miss["rejected"][-1]["content"]  # less its form
    for pair in kept[::10]:
        assert gold_preference(pair["domain"], pair["reference"], pair["chosen"][-1]["content"],
                               pair["rejected"][-1]["content"]) == 1


@pytest.mark.parametrize("adapter", [True, False])
def test_a_seed_fixes_the_freshly_drawn_weights_whatever_the_process_drew_before(trained_run, tmp_path, adapter):
    """The reward head and a LoRA adapter are drawn before TRL's Trainer seeds; torch starts each process from a
    random seed, so without seeding first the same config trained a different model in every process."""
    from course_lib.config import load_profile

    run = RunContext(run_dir=trained_run.run_dir, profile=load_profile("tiny-cpu", {"lora.reward": adapter}))

    def fresh_weights(seed: int, noise: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(noise)  # what earlier work in the process left in torch's generator
        trainer = make_reward_trainer(RewardStageConfig(max_steps=1, seed=seed), run, output_dir=tmp_path, progress=False)
        return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}

    first, again, other = fresh_weights(0, noise=1), fresh_weights(0, noise=2), fresh_weights(1, noise=1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_a_seed_fixes_the_sft_adapter_whatever_the_process_drew_before(tmp_path, small_data):
    run = new_run(tmp_path, small_data)

    def adapter(seed: int, noise: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(noise)
        trainer = make_sft_trainer(SFTStageConfig(max_steps=1, seed=seed, progress=False), run)
        return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}

    first, again = adapter(0, noise=1), adapter(0, noise=2)
    assert first and all(torch.equal(first[name], again[name]) for name in first)


@pytest.mark.parametrize("adapter", [True, False])
def test_the_reward_model_trains_an_adapter_or_every_weight_as_the_profile_says(trained_run, tmp_path, adapter):
    from course_lib.config import load_profile
    from course_lib.stages.reward import (answer_swap_pairs, fact_over_form_pairs, form_kept_pairs, near_miss_pairs,
                                          preference_rows)

    run = RunContext(run_dir=trained_run.run_dir, profile=load_profile("tiny-cpu", {"lora.reward": adapter}))
    trainer = make_reward_trainer(RewardStageConfig(max_steps=1, swap_pairs=0.5, near_miss_pairs=0.25,
                                                    fact_over_form_pairs=0.2, seed=3),
                                  run, output_dir=tmp_path, progress=False)
    rows = preference_rows(run, "prefs_train.jsonl")
    assert len(trainer.train_dataset) == (len(rows) + round(0.5 * len(answer_swap_pairs(rows, seed=3)))
                                          + round(0.25 * len(near_miss_pairs(rows, seed=3)))
                                          + round(0.2 * len(fact_over_form_pairs(rows, seed=3)))
                                          + round(0.2 * len(form_kept_pairs(rows, seed=3))))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    lr = run.profile.training.learning_rate
    if adapter:
        assert trainable < 0.25 * total and trainer.args.learning_rate == lr
    else:  # every weight, at a fifth of the profile's learning rate
        assert trainable == total and trainer.args.learning_rate == pytest.approx(lr / 5)


def test_a_score_model_saved_over_one_of_the_other_form_loads_as_saved(trained_run, tmp_path):
    """A profile changed between runs: whole weights saved where an adapter was (or the reverse) replace it."""
    from course_lib.config import load_profile
    from course_lib.stages.reward import load_score_model, save_score_model

    folder, sft_dir = tmp_path / "member_0", trained_run.stage_dir("sft") / "merged"
    for adapter in (True, False, True):
        run = RunContext(run_dir=trained_run.run_dir, profile=load_profile("tiny-cpu", {"lora.reward": adapter}))
        trainer = make_reward_trainer(RewardStageConfig(max_steps=1, seed=int(adapter)), run, output_dir=tmp_path / "ckpt",
                                      progress=False)
        save_score_model(trainer.model, folder)
        assert (folder / "adapter_config.json").is_file() == adapter and (folder / "model.safetensors").is_file() != adapter
        inputs = trainer.processing_class(["Triage: urgent."], return_tensors="pt")
        with torch.no_grad():  # each save draws a new head: equal scores mean this save was loaded
            expected = trainer.model.eval()(**inputs).logits
            loaded = load_score_model(run.profile, sft_dir, folder)
            assert torch.allclose(loaded(**inputs).logits, expected, atol=1e-5)
        assert not any(p.requires_grad for p in loaded.parameters())  # frozen, in either form
        trainable = load_score_model(run.profile, sft_dir, folder, trainable=True)
        assert any(p.requires_grad for p in trainable.parameters())


def test_stages_without_inputs_say_what_is_missing_and_who_makes_it(tmp_path, small_data):
    empty_run = RunContext.create(tmp_path / "empty", "tiny-cpu")
    with pytest.raises(MissingArtifactError, match="sft_train.jsonl.*01_data_curation"):
        run_sft(SFTStageConfig(max_steps=1), empty_run)
    no_sft = new_run(tmp_path / "no_sft", small_data)
    with pytest.raises(MissingArtifactError, match="sft stage's merged.*02_sft"):
        run_reward(RewardStageConfig(max_steps=1), no_sft)
    (no_sft.run_dir / "data" / "sft_train.jsonl").write_text("")
    with pytest.raises(DataError, match="sft_train.jsonl: the data file is empty.*01_data_curation"):
        run_sft(SFTStageConfig(max_steps=1), no_sft)


def test_reward_refuses_an_sft_model_with_another_tokenizer(trained_run, tmp_path):
    run = RunContext.create(tmp_path, "tiny-cpu")
    shutil.copytree(trained_run.run_dir / "data", tmp_path / "data")
    shutil.copytree(trained_run.stage_dir("sft"), run.stage_dir("sft"))
    info_file = run.stage_dir("sft") / "stage_info.json"
    info = json.loads(info_file.read_text())
    info["tokenizer_fingerprint"] = "0123456789abcdef"
    info_file.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="share one tokenizer.*sft use tokenizer 0123456789abcdef"):
        run_reward(RewardStageConfig(max_steps=1), run)


def test_sft_with_packing_trains(tmp_path, small_data):
    run = new_run(tmp_path, small_data)
    result = run_sft(SFTStageConfig(max_steps=2, packing=True, eval_prompts=0, logging_steps=1), run)
    assert result.metrics["global_step"] == 2 and result.metrics["eval_loss"] < result.metrics["base_eval_loss"] + 1


def test_sft_through_the_qlora_recipe_on_cpu(tmp_path, small_data, tiny_base_path):
    """The gpu-qlora profile's 4-bit NF4 + LoRA path through TRL, pointed at the tiny base on CPU."""
    from course_lib.config import load_profile

    profile = load_profile("gpu-qlora", {
        "device": "cpu", "model.name": str(tiny_base_path), "model.dtype": "float32", "model.max_seq_length": 256,
        "quantization.compute_dtype": "float32", "training.optim": "adamw_torch",
        "training.gradient_checkpointing": False, "training.per_device_batch_size": 4,
        "training.gradient_accumulation_steps": 1, "training.learning_rate": 0.005,
    })
    shutil.copytree(small_data, tmp_path / "data")
    run = RunContext.create(tmp_path, profile)
    result = run_sft(SFTStageConfig(max_steps=3, eval_prompts=2, max_new_tokens=4, logging_steps=1), run)
    assert result.metrics["global_step"] == 3
    assert result.metrics["ledger"]["trainable_parameters"] < result.metrics["ledger"]["parameters"]
    assert (result.output_dir / "merged" / "model.safetensors").is_file()


def test_labels_from_the_widget_store_train_the_reward_model_unchanged(trained_run, tmp_path):
    """Store -> labels_to_preferences -> prefs_labeled.jsonl -> run_reward(train_file=...)."""
    from course_lib.atomic import atomic_write_jsonl
    from course_lib.data import load_records
    from course_lib.labeling import LabelStore, labels_to_preferences, preferences_to_pairs

    run = RunContext.create(tmp_path, "tiny-cpu")
    shutil.copytree(trained_run.run_dir / "data", tmp_path / "data")
    shutil.copytree(trained_run.stage_dir("sft"), run.stage_dir("sft"))
    with pytest.raises(MissingArtifactError, match="label_preferences"):
        run_reward(RewardStageConfig(max_steps=1, train_file="prefs_labeled.jsonl"), run)
    pairs = preferences_to_pairs(list(load_records(tmp_path / "data" / "prefs_train.jsonl"))[:12], seed=0)
    store = LabelStore(tmp_path / "labels.jsonl")
    for i, pair in enumerate(pairs):  # what the widget's buttons call
        store.add(pair["id"], "ann", ["A", "B", "tie", "skip"][i % 4], rationale="clicked")
    rows = labels_to_preferences(pairs, store.labels())
    assert len(rows) == 6 and rows.report["ties_dropped"] == 3 and rows.report["skipped"] == 3
    atomic_write_jsonl(tmp_path / "data" / "prefs_labeled.jsonl", rows)
    result = run_reward(RewardStageConfig(max_steps=2, train_file="prefs_labeled.jsonl", length_probe_pairs=2,
                                          bootstrap_resamples=100), run)
    assert result.metrics["train_pairs"] == 6


def test_label_efficiency_curve_shares_its_first_point_across_strategies(trained_run, monkeypatch):
    import course_lib.stages.reward_active as active
    from course_lib.stages.reward_active import LabelCurveConfig, label_efficiency_curve

    cfg = LabelCurveConfig(label_counts=(6, 12), seeds=(0, 1), max_steps=2, batch_size=4)
    trained = []
    real = active.train_reward_model
    monkeypatch.setattr(active, "train_reward_model", lambda *a, **k: trained.append(1) or real(*a, **k))
    curve = label_efficiency_curve(trained_run, cfg, progress=False)
    assert curve["label_counts"] == [6, 12] and set(curve["curves"]) == {"random", "uncertainty"}
    for line in curve["curves"].values():
        assert line["x"] == [6, 12] and len(line["per_seed"]) == 2
        assert all(0 <= low <= mean <= high <= 1 for low, mean, high in zip(line["low"], line["mean"], line["high"]))
    firsts = {strategy: [run[0] for run in line["per_seed"]] for strategy, line in curve["curves"].items()}
    assert firsts["random"] == firsts["uncertainty"]  # the same random first labels, trained once
    assert len(trained) == 2 * (1 + 2) * cfg.ensemble_size  # per seed: the shared point, then one per strategy
    with pytest.raises(ConfigError, match="label counts"):
        LabelCurveConfig(label_counts=(12, 6))


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_preference_batches_group_pairs_of_similar_length(trained_run, tmp_path, stage):
    """group_by_length batches pairs by their longest sequence, with far less padding than random batches."""
    from torch.utils.data import RandomSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from course_lib.stages import DPOStageConfig, make_dpo_trainer

    def padding_share(trainer):
        padded = real = 0
        for batch in trainer.get_train_dataloader():
            padded += batch["attention_mask"].numel()
            real += int(batch["attention_mask"].sum())
        return 1 - real / padded

    shares = {}
    for grouped in (True, False):
        if stage == "reward":
            cfg = RewardStageConfig(max_steps=1, batch_size=4, group_by_length=grouped, progress=False)
            trainer = make_reward_trainer(cfg, trained_run, output_dir=tmp_path / str(grouped))
        else:
            cfg = DPOStageConfig(max_steps=1, batch_size=4, group_by_length=grouped, progress=False)
            trainer = make_dpo_trainer(cfg, trained_run.variant(f"grouped-{grouped}"))
        sampler = trainer._get_train_sampler()
        assert isinstance(sampler, LengthGroupedSampler if grouped else RandomSampler)
        shares[grouped] = padding_share(trainer)
        if stage == "dpo":  # finish_dpo evaluates the held-out pairs through the same kind of sampler
            assert sum(len(b["input_ids"]) for b in trainer.get_eval_dataloader()) == 2 * len(trainer.eval_dataset)
    assert shares[True] < 0.75 * shares[False], shares


def test_label_efficiency_curve_scores_a_random_draw_of_candidates(trained_run, monkeypatch):
    """The uncertainty rounds score ``candidates`` unlabeled pairs (at least the labels wanted), not the pool."""
    import course_lib.stages.reward_active as active
    from course_lib.stages.reward_active import LabelCurveConfig, label_efficiency_curve

    scored = []
    real = active.score_conversations
    monkeypatch.setattr(active, "score_conversations", lambda m, tok, convs, n: scored.append(len(convs)) or real(m, tok, convs, n))
    cfg = LabelCurveConfig(label_counts=(4, 8, 10), strategies=("uncertainty",), seeds=(0,), max_steps=1, batch_size=4,
                           candidates=3)
    curve = label_efficiency_curve(trained_run, cfg, progress=False)
    # 2 rounds x 2 members x 2 sides; round 1 wants 4 labels (more than 3 candidates), round 2 wants 2.
    assert scored == [4] * 4 + [3] * 4
    assert len(curve["curves"]["uncertainty"]["per_seed"][0]) == 3
    with pytest.raises(ConfigError, match="candidates"):
        LabelCurveConfig(candidates=-1)


def test_the_notebook_path_and_the_cached_path_write_the_same_stage(tmp_path, small_data):
    """make_sft_trainer + train() + finish_sft (notebook 02) leaves what run_sft would: run_sft then skips."""
    run = new_run(tmp_path, small_data)
    cfg = SFTStageConfig(max_steps=2, eval_prompts=2, max_new_tokens=4, logging_steps=1, save_steps=10, progress=False)
    trainer = make_sft_trainer(cfg, run)
    assert trainer.args.max_steps == 2 and trainer.args.assistant_only_loss
    trainer.train()
    result = finish_sft(trainer, cfg, run)
    assert (result.output_dir / "COMPLETE").is_file() and (result.output_dir / "merged" / "model.safetensors").is_file()
    assert result.metrics["ledger"]["tokens"] > 0 and result.metrics["gold_score_before"] is not None
    assert run_sft(cfg, run).skipped


def test_editing_any_kit_code_or_an_input_file_reruns_a_stage(tmp_path, small_data, monkeypatch):
    """The marker covers all kit code, not only stages/ (an edited gold judge re-runs SFT), and the input files."""
    from course_lib import fingerprint
    from course_lib.paths import PACKAGE_DIR

    run = new_run(tmp_path / "run", small_data)
    cfg = SFTStageConfig(max_steps=1, eval_prompts=0, save_steps=10, eval_steps=10, progress=False)
    assert not run_sft(cfg, run).skipped
    copy = tmp_path / "course_lib"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "_track"))
    monkeypatch.setattr(fingerprint, "PACKAGE_DIR", copy)
    assert run_sft(cfg, run).skipped  # the same code, read from the copy: still done
    judge = copy / "domains" / "judge.py"
    judge.write_text(judge.read_text() + "\n# an edit to the gold judge\n")
    assert not run_sft(cfg, run).skipped  # edited code: the stage runs again
    assert run_sft(cfg, run).skipped
    data = run.data_file("sft_train.jsonl")
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))  # one training record fewer
    assert not run_sft(cfg, run).skipped  # changed input data: the stage runs again
