"""``docs/benchmarks.md`` from the suite's results (``docs/results/benchmarks.json``), with its charts.

The page is generated, never edited by hand: ``python benchmarks/run.py --from-json
docs/results/benchmarks.json`` rewrites it from measured results. Charts are SVG files drawn with
matplotlib (the ``bench`` extra: ``pip install -e .[bench]``), a static format any markdown viewer
shows and git diffs as text; without matplotlib the page is written without them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

AIMS = {"sft_grouped": 1.3, "dpo_precompute_3": 1.15, "reference_memory": 0.6, "ppo_vs_rloo": 1.0}
"""The targets of issue 14, part 4, each checked against the measured value on the page."""


def _n(value: float | None, digits: int = 1) -> str:
    """A number for a table: thousands separated, ``-`` when missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _met(ok: bool) -> str:
    return "meets the aim" if ok else "misses the aim"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows] + [""]


# --- charts --------------------------------------------------------------------------------------

def _charts(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Draw the page's charts as SVG into ``folder``; {} without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return {}
    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "course_lib", "font.size": 9})  # the same results give the same files
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, metadata={"Date": None})
        plt.close(fig)
        out[name] = folder / name

    stages = results["stages"]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.bar(list(stages), [s["tokens_per_second"] for s in stages.values()], color="#4c72b0")
    ax.set_ylabel("tokens / s")
    ax.set_title(f"Training tokens/s per stage ({results['profile']})")
    save(fig, "stages.svg")

    modes = results["sft_batching"]
    fig, ax = plt.subplots(figsize=(5.5, 2.8))
    colors = ["#c44e52" if m["crosses_examples"] else "#55a868" for m in modes.values()]
    ax.bar([name.replace("_", "\n") for name in modes], [m["tokens_per_second"] for m in modes.values()], color=colors)
    ax.set_ylabel("real tokens / s")
    ax.set_title("SFT batching (red: attention crosses conversations)")
    save(fig, "sft_batching.svg")

    scale = results["scaling"]
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    for ax, key, label in ((axes[0], "by_seq_len", "seq_len"), (axes[1], "by_width", "width")):
        points = scale[key]
        ax.plot([p[label] for p in points], [p["tokens_per_second"] for p in points], marker="o", color="#4c72b0")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length" if label == "seq_len" else "hidden size")
        ax.set_ylabel("tokens / s")
        fixed = f"width {points[0]['width']}" if label == "seq_len" else f"seq_len {points[0]['seq_len']}"
        ax.set_title(f"tokens/s vs {label} ({fixed})")
    save(fig, "scaling.svg")
    return out


# --- sections ------------------------------------------------------------------------------------

def _header(results: dict[str, Any], results_name: str | None) -> list[str]:
    m = results["machine"]
    peak = results["peak"]
    where = f"`{results_name}`" if results_name else "the results file"
    lines = [
        "# Benchmarks",
        "",
        "How fast and how lean each stage of the kit is, and the choices that change it, measured side by side in",
        f"one run of the suite (`benchmarks/run.py`). Generated from {where}; do not edit by hand.",
        "These are measurements, never timed tests: the numbers move with the machine and its load.",
        "",
        "Reproduce (under a minute of setup, about 10 minutes on 2 CPU cores):",
        "",
        "```bash",
        "pip install -e .[bench]        # matplotlib, for the charts",
        f"{results['command']}",
        "python benchmarks/run.py --profile gpu-qlora   # on a GPU",
        "```",
        "",
    ]
    if results.get("quick"):
        lines += ["> **Smoke run (`--quick`)**: a step or two each. These numbers only show that the suite runs.", ""]
    lines += ["## The machine", ""]
    lines += _table(["", ""], [
        ["CPU", m["cpu"]], ["cores available", str(m["cores"])], ["torch threads", str(m["torch_threads"])],
        ["GPU", m["gpu"] or "none"], ["device measured", results["device"]], ["profile", results["profile"]],
        ["python / torch", f"{m['python']} / {m['torch']}"], ["transformers / trl", f"{m['transformers']} / {m['trl']}"],
        ["peak FLOP/s assumed", f"{peak['flops_per_second'] / 1e9:,.1f} GFLOP/s, measured: {peak['how']}"],
        ["whole suite", f"{results['suite_seconds'] / 60:.1f} min"],
    ])
    return lines


def _stages(results: dict[str, Any], charts: dict[str, Path], folder: str) -> list[str]:
    rows = []
    for name, s in results["stages"].items():
        led = s["ledger"]
        rows.append([name, _n(s["tokens_per_second"]), _n(s["samples_per_second"], 2), _n(s["step_seconds"], 3),
                     _n(led["peak_memory_mb"], 0), f"{led['estimated_flops']:.2e}", f"{100 * s['mfu']:.2f}%",
                     f"{led['parameters']:,} / {led['trainable_parameters']:,}"])
    lines = ["## Stages", "",
             f"Each stage trains a few dozen steps on the `{results['profile']}` profile; rates leave out the first "
             f"{results['warmup_steps']} steps (warm-up). SFT and the reward model run as the track runs them "
             "(`run_sft`, `run_reward`), DPO and PPO through their trainers (`make_dpo_trainer`, `make_ppo_trainer`). "
             "A sample is a conversation (SFT), a preference pair (reward model, DPO) or a sampled reply (PPO). "
             "Peak memory and FLOPs are the stage's compute ledger over its whole training; FLOPs are estimated as "
             "(4 x parameters + 2 x trainable parameters) per token, which leaves out attention's own cost, and "
             "MFU is the steady steps' estimated FLOP/s over the measured peak above.", ""]
    lines += _table(["stage", "tokens/s", "samples/s", "s/step", "peak MB", "est. FLOPs", "MFU", "params / trainable"],
                    rows)
    ppo = results["stages"]["ppo"]
    lines += [f"PPO counts each rollout's tokens once for sampling and once per update epoch; it spends "
              f"{100 * ppo['generation_share']:.0f}% of its time sampling replies.", ""]
    if results["stages"]["sft"]["mfu"] < 0.05:
        lines += ["MFU is low on the tiny base, as expected: a 3M-parameter model's matmuls are too small to keep the "
                  "cores busy, and the per-step overheads of the trainers (data collation, the optimizer, logging) "
                  "weigh as much as the arithmetic. The scaling section shows MFU rising with width.", ""]
    if "stages.svg" in charts:
        lines += [f"![tokens/s per stage]({folder}/stages.svg)", ""]
    return lines


def _sft_batching(results: dict[str, Any], charts: dict[str, Path], folder: str) -> list[str]:
    modes = results["sft_batching"]
    rows = [[name, _n(m["tokens_per_second"]), f"{m['ratio_to_padded']:.2f}x", _n(m["step_seconds"], 3),
             "yes" if m["crosses_examples"] else "no",
             "-" if m["attention_leak"] is None else f"{m['attention_leak']:.1e}", _n(m["peak_memory_mb"], 0)]
            for name, m in modes.items()]
    correct = {n: m for n, m in modes.items() if not m["crosses_examples"]}
    fastest = max(correct, key=lambda n: correct[n]["tokens_per_second"])
    grouped = modes["group_by_length"]["ratio_to_padded"]
    lines = ["## Side-by-side ratios", "",
             "### SFT batching", "",
             "Real (non-padding) tokens per second on the same conversations and model, one mode at a time: padded "
             "batches in random order, batches grouped by length (`train_sampling_strategy=\"group_by_length\"`, the "
             "kit's default), TRL's `bfd` packing (best-fit decreasing; padding-free rows whose `position_ids` "
             "restart at each conversation) and `wrapped` packing (the stream cut into full rows). "
             "*Leak* is measured, not assumed: the largest change in a packed conversation's logits when the "
             "conversations before it in its row are removed (0 to rounding: attention stays inside it).", ""]
    lines += _table(["mode", "real tokens/s", "vs padded", "s/step", "attention crosses?", "leak", "peak MB"], rows)
    lines += [
        f"Grouping by length gives {grouped:.2f}x the real tokens/s of random padded batches "
        f"({_met(grouped >= AIMS['sft_grouped'])} of {AIMS['sft_grouped']}x): the same conversations and the same "
        "loss, only batched so that a batch carries less padding; the gain is bounded by the padding random batches "
        "carry, and the per-step costs that do not shrink with it (the optimizer, collation, the LM head's "
        "softmax over the vocabulary at every position) keep it below that bound. "
        f"`bfd` packing runs at {modes['packed_bfd']['ratio_to_padded']:.2f}x: it keeps each conversation apart, "
        "but on this device transformers enforces that with a dense block-diagonal mask over the whole packed row, "
        "so each row pays attention over its full length; with FlashAttention's variable-length kernel on a GPU "
        "(`attn_implementation=\"flash_attention_2\"`) the same batches cost only their real tokens, which is where "
        f"packing pays. `wrapped` runs at {modes['packed_wrapped']['ratio_to_padded']:.2f}x but lets every token "
        "attend to the unrelated conversations before it in its row (the leak above): it trains on a different, "
        "wrong context, so the kit never uses it for chat SFT.",
        "",
        f"**Which to use:** the fastest mode that keeps conversations apart here is `{fastest}`. On a CPU, and on a GPU "
        "without FlashAttention, keep the default (`group_by_length=True`). On a GPU with FlashAttention 2 "
        "installed and the model loaded with it, `packing=True` (`bfd`) removes padding entirely; measure it "
        "there with `--profile`. Never `wrapped` for conversations.",
        "",
    ]
    if "sft_batching.svg" in charts:
        lines += [f"![SFT batching]({folder}/sft_batching.svg)", ""]
    return lines


def _dpo(results: dict[str, Any]) -> list[str]:
    d = results["dpo_reference"]
    rows = []
    for epochs in (1, 3):
        r = d[f"epochs_{epochs}"]
        rows.append([str(epochs), str(r["on_the_fly"]["steps"]), _n(r["on_the_fly"]["total_seconds"], 2),
                     _n(r["precomputed"]["build_seconds"], 2) + " + " + _n(r["precomputed"]["train_seconds"], 2),
                     _n(r["precomputed"]["total_seconds"], 2), f"{r['speedup']:.2f}x"])
    three = d["epochs_3"]["speedup"]
    return ["### DPO: reference log-probs precomputed or on the fly", "",
            f"The DPO stage's trainer on {d['pairs']} pairs, {d['batch_size']} per step, built and trained from the "
            "SFT model; each time covers building the trainer (where TRL scores every training and validation pair "
            "under the reference once) and training.", ""] + _table(
        ["epochs", "steps", "on the fly (s)", "precomputed: build + train (s)", "precomputed (s)", "speed-up"], rows) + [
        f"At 3 epochs precomputing is {three:.2f}x faster ({_met(three >= AIMS['dpo_precompute_3'])} of "
        f"{AIMS['dpo_precompute_3']}x); at 1 epoch {d['epochs_1']['speedup']:.2f}x. On the fly, every step runs the "
        "reference forward on its batch; precomputed, each pair is scored once, before training. With LoRA a policy "
        "step costs about two forwards (the backward computes activation gradients, not the frozen weights'), so "
        "E epochs cost about 3E forwards per pair on the fly and 2E + 1 precomputed: a speed-up of 3E / (2E + 1), "
        "1.0x at 1 epoch, 1.29x at 3, never above 1.5x.",
        "",
        "**Which to use:** precompute (`precompute_ref_log_probs=True`) when training several epochs over a fixed "
        "set of pairs, or when memory is short (no reference forward during training); compute on the fly for one "
        "pass or less, for pairs that change during training (online or iterative DPO, a labeling session adding "
        "pairs), and when the validation set is large (it is precomputed too).",
        ""]


def _reference(results: dict[str, Any]) -> list[str]:
    r = results["reference_memory"]
    on, off = r["checkpointing"], r["no_checkpointing"]
    a, c = on["adapters"], on["copy"]
    rows = [[kind, v["reference_held_by"], "on" if v["gradient_checkpointing"] else "off", f"{v['parameters']:,}",
             _n(v["peak_memory_mb"], 0), _n(v["train_peak_mb"], 0), _n(v["model_mb"], 0)]
            for pair in (on, off) for kind, v in (("adapters", pair["adapters"]), ("copy", pair["copy"]))]
    ratio = r["model_memory_ratio"]
    weights_mb = a["parameters"] * 4 / 2**20
    return ["### The reference: adapters switched off, or a separate copy", "",
            f"TRL's `DPOTrainer` on a random Llama of {a['parameters'] / 1e6:.0f}M parameters (hidden 768, built "
            "locally), a LoRA policy, a few steps; each way runs in its own process, with gradient checkpointing "
            "(as the GPU profiles train models of this size) and without. Peaks are the process's peak resident set "
            "(`VmHWM`; on a GPU its peak allocation), with glibc's mmap threshold fixed so that freed blocks leave the "
            "resident set as a GPU allocator's peak would not count them: over the whole process, and while training "
            "(the peak restarted once the models are built, which leaves out the random initialisation's passing "
            "buffers); *models* is the training peak less what the process held after its imports, before any model "
            "existed.", ""] + _table(
        ["way", "reference", "checkpointing", "parameters", "process peak MB", "training peak MB", "models MB"], rows) + [
        f"With gradient checkpointing, holding the reference as the policy with its adapter switched off needs "
        f"{ratio:.2f}x the model memory of a separate frozen copy ({_met(ratio <= AIMS['reference_memory'])} of at "
        f"most {AIMS['reference_memory']}), and {on['peak_ratio']:.2f}x of its training peak counting the whole "
        f"process (the imported libraries weigh the same in both); without checkpointing "
        f"{off['model_memory_ratio']:.2f}x. The copy costs {c['model_mb'] - a['model_mb']:,.0f} MB more, one more "
        f"set of the weights ({weights_mb:,.0f} MB in float32), and that is all the adapters save: the policy's own "
        f"weights and what training adds around them (activations, the trainer's buffers) are the same both ways, "
        f"{a['model_mb']:,.0f} MB here with checkpointing and {off['adapters']['model_mb']:,.0f} MB without, where "
        "every layer's activations stay alive until the backward pass. The ratio falls towards one half as the "
        "weights outweigh the rest: on larger models, and with checkpointing.",
        "",
        "**Which to use:** the adapters (the kit's way) whenever the policy trains with LoRA; a separate copy only "
        "for full fine-tuning, where no adapter can be switched off, or when the reference must differ from the "
        "starting policy.",
        ""]


def _ppo(results: dict[str, Any]) -> list[str]:
    p = results["ppo_vs_rloo"]
    s = p["settings"]
    ratio, one, without_gold = p["ppo_to_rloo_samples_per_second"], p["ppo_one_epoch_to_rloo"], p["ppo_without_gold_to_rloo"]

    def row(name: str, r: dict[str, Any]) -> list[str]:
        shares = ("-" if "generation_share" not in r else " / ".join(
            f"{100 * r[f'{part}_share']:.0f}%" for part in ("generation", "scoring", "gold", "update")))
        return [name, _n(r["samples_per_second"], 2), _n(r.get("samples_per_second_without_gold"), 2),
                _n(r["step_seconds"], 2), _n(r["mean_completion_tokens"], 1), shares]

    rows = [row(f"kit PPO ({p['ppo']['ppo_epochs']} epochs, the default)", p["ppo"]),
            row("kit PPO (1 epoch)", p["ppo_one_epoch"]), row("TRL RLOOTrainer (1 pass)", p["rloo"])]
    verdict = "at least as fast" if ratio >= AIMS["ppo_vs_rloo"] else f"slower: {1 / ratio:.2f}x the time per reply"
    return ["### PPO against TRL's RLOO", "",
            f"Both from the SFT model with a fresh LoRA adapter, rewarded by the same reward model, "
            f"{s['completions_per_step']} replies per step (RLOO: {s['completions_per_step'] // s['rloo_generations_per_prompt']} "
            f"prompts x {s['rloo_generations_per_prompt']}), at most {s['max_new_tokens']} new tokens at temperature "
            f"{s['temperature']}. The kit's PPO iteration splits into sampling, scoring (log-probs under the policy "
            "and the reference, the value model, the reward model, advantages), the gold judge's diagnostic score "
            "of every reply (code runs in the sandbox; RLOO logs no such score) and the updates.", ""] + _table(
        ["trainer", "replies/s", "replies/s without the gold judge", "s/step", "mean reply tokens",
         "sampling / scoring / gold judge / updates"], rows) + [
        f"The kit's PPO trains {ratio:.2f}x RLOO's replies per second ({verdict}; {_met(ratio >= AIMS['ppo_vs_rloo'])}); "
        f"{without_gold:.2f}x leaving out the gold judge, a diagnostic RLOO does not compute; with one update epoch, "
        f"as RLOO makes one pass, {one:.2f}x. The gap is the algorithm's, not its code's: PPO's value model is a "
        "second network of the policy's size, run forward while scoring and forward and backward in every update, "
        "and PPO scores each rollout under the policy once more before updating (its old log-probs; RLOO's single "
        "pass reuses the update's own); by default it also passes twice over each rollout. Counting a forward as "
        "one unit and a forward and backward as two, an iteration costs sampling plus 12 units (4 scoring, 4 per "
        "epoch) against RLOO's sampling plus 4. Within that, the kit's PPO computes no more than it needs: the LM "
        "head reads only the reply's positions, minibatches drop the columns that are padding in all their rows, "
        "and the entropy is computed in the update only when an entropy bonus uses it. The replies' lengths differ "
        "too (the policies stop at different times), so compare tokens as well as replies.",
        "",
        "**Which to use:** PPO when a learned value baseline helps (long replies, sparse rewards) and to see every "
        "part of RLHF (notebook 04); RLOO or GRPO (`course_lib.stages.grpo`) for a cheaper step without a value "
        "model when several replies per prompt are affordable.",
        ""]


def _scaling(results: dict[str, Any], charts: dict[str, Path], folder: str) -> list[str]:
    s = results["scaling"]

    def rows(points, key):
        first = points[0]
        return [[str(p[key]), f"{p['parameters']:,}", _n(p["tokens_per_second"], 0),
                 f"{first['tokens_per_second'] / p['tokens_per_second']:.2f}", f"{100 * p['mfu']:.2f}%"]
                for p in points]

    by_len, by_width = s["by_seq_len"], s["by_width"]
    lines = ["### Scaling with sequence length and width", "",
             f"Full fine-tuning steps (AdamW) of random Llamas with {s['layers']} layers, {s['batch_size']} sequences "
             "per step. *Cost per token* is the time per token relative to the first row.", "",
             f"By sequence length (hidden size {by_len[0]['width']}):", ""]
    lines += _table(["seq_len", "parameters", "tokens/s", "cost per token", "MFU"], rows(by_len, "seq_len"))
    lines += [f"By width (sequence length {by_width[0]['seq_len']}):", ""]
    lines += _table(["hidden size", "parameters", "tokens/s", "cost per token", "MFU"], rows(by_width, "width"))
    def cost(points):  # time per token, last point over first
        return points[0]["tokens_per_second"] / points[-1]["tokens_per_second"]

    params = by_width[-1]["parameters"] / by_width[0]["parameters"]
    lines += [f"From {by_len[0]['seq_len']} to {by_len[-1]['seq_len']} tokens per sequence the time per token changes "
              f"{cost(by_len):.2f}x. Per token, the weights cost the same at any length and attention "
              "grows with it (about length / (6 x width) of the weights' cost per layer), so at these sizes longer "
              "rows mostly mean larger matmuls, which use the cores better, until attention's share takes over. "
              f"From width {by_width[0]['width']} to {by_width[-1]['width']} the parameters grow {params:.1f}x and "
              f"the time per token {cost(by_width):.2f}x: cost grows with the parameters, but less than in "
              "proportion while the matmuls are too small to keep the cores busy (MFU rises with width).", ""]
    if "scaling.svg" in charts:
        lines += [f"![scaling]({folder}/scaling.svg)", ""]
    return lines


def _track(results: dict[str, Any]) -> list[str]:
    t = results.get("track")
    lines = ["## The whole track", ""]
    if not t:
        return lines + ["Not measured in this run: pass a finished track run, e.g. "
                        "`python benchmarks/run.py --track-run runs/tiny` after `make track`, to add each notebook's "
                        "wall time here (read from the runner's `track_state.json`, or from the executed notebooks).", ""]
    rows = [[name, _n(seconds, 0)] for name, seconds in t["notebooks"].items()]
    rows.append(["**total**", f"**{_n(t['total_seconds'], 0)}** ({t['total_seconds'] / 60:.1f} min)"])
    return lines + [f"From `{t['source']}`.", ""] + _table(["notebook", "seconds"], rows)


def _gpu() -> list[str]:
    return ["## On a GPU", "",
            "`python benchmarks/run.py --profile gpu-qlora` (or any profile whose device is `cuda` or `auto` with a GPU "
            "visible) runs every measurement on the GPU: the stages at the profile's precision and quantization, the "
            "peak FLOP/s from bfloat16 8192x8192 matmuls, peak memory as `torch.cuda.max_memory_allocated`, and the "
            "reference-memory pair in its own processes as on CPU. A hub profile downloads its model once; the "
            "random models (reference memory, scaling) are built locally. No GPU run is recorded on this page yet.",
            ""]


def page(results: dict[str, Any], charts: dict[str, Path], folder: str, results_name: str | None = None) -> str:
    """The markdown of the benchmarks page for ``results``; ``charts`` are the drawn files, ``folder`` their
    path relative to the page, ``results_name`` the results file as the page names it."""
    lines = _header(results, results_name) + _stages(results, charts, folder) + _sft_batching(results, charts, folder)
    lines += _dpo(results) + _reference(results) + _ppo(results) + _scaling(results, charts, folder)
    lines += _track(results) + _gpu()
    return "\n".join(lines).rstrip() + "\n"


def write_page(results: dict[str, Any], path: Path, results_name: str | None = None, charts: bool = True) -> Path:
    """Write the page (and, with ``charts`` and matplotlib, its SVG charts in ``<page stem>/`` beside it).

    Args:
        results: the suite's results (``benchmarks/run.py``).
        path: the markdown file to write.
        results_name: the JSON file the results are kept in, as the page names it.
        charts: draw the charts.
    """
    path = Path(path)
    drawn = _charts(results, path.parent / path.stem) if charts else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(results, drawn, path.stem, results_name), encoding="utf-8")
    return path
