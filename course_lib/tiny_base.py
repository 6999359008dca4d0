"""The embedded tiny base: a small Llama and its BPE tokenizer, built offline and cached.

The build is deterministic: the corpus is the kit's shipped text, the domains' prompt-side
text and a fixed selection of the installed Python standard library's source; seeds are
fixed. Its content hash (corpus, config, this file's code) names the cache folder under
``$COURSE_LIB_HOME/tiny-base/``, so a second build with the same inputs is a cache hit.
Introduced in ``00_setup``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from .atomic import atomic_path, atomic_write_json
from .fingerprint import digest_json, source_digest
from .paths import PACKAGE_DIR, kit_home

SHIPPED_DIR = PACKAGE_DIR / "assets" / "tiny-base"
"""The tiny base the kit ships (half precision), used by the ``tiny-base`` model name."""
PROBE_TEXT = ("Someone with a mild sunburn on the shoulders needs only self-care. Rest and use simple home care.\n"
              "def count_words(text):\n    \"\"\"Return the number of words separated by whitespace in text.\"\"\"\n"
              "    return len(text.split())\n")
"""A fixed text whose loss ``ship`` records in full and in half precision."""
LOSS_TOLERANCE = 0.02
"""Relative gap allowed between a rebuild's pretraining losses and the shipped build's, step for step."""

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, PAD, "<|im_start|>", EOS]

# ChatML with {% generation %} around assistant text, so TRL's assistant-only loss
# (return_assistant_tokens_mask) knows which tokens the model must learn to produce.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyBaseConfig:
    """How the tiny base is built. Every field enters the content hash.

    Attributes are grouped: corpus, tokenizer, architecture, pretraining.
    """

    stdlib_max_bytes: int = field(default=1_500_000, metadata={"help": "bytes of stdlib source in the corpus"})
    knowledge_chars_per_domain: int = field(default=500_000, metadata={"help": "characters of domain knowledge per domain (0: none)"})
    vocab_size: int = field(default=4096, metadata={"help": "BPE vocabulary size, special tokens included"})
    hidden_size: int = field(default=192, metadata={"help": "width of the residual stream"})
    num_hidden_layers: int = field(default=4, metadata={"help": "transformer blocks"})
    num_attention_heads: int = field(default=4, metadata={"help": "attention heads (head dim = hidden / heads)"})
    intermediate_size: int = field(default=512, metadata={"help": "MLP inner width"})
    max_position_embeddings: int = field(default=1024, metadata={"help": "longest sequence the model accepts"})
    seq_length: int = field(default=128, metadata={"help": "pretraining sequence length in tokens"})
    batch_size: int = field(default=32, metadata={"help": "sequences per pretraining step"})
    max_steps: int = field(default=2000, metadata={"help": "pretraining optimizer steps"})
    learning_rate: float = field(default=6e-3, metadata={"help": "peak AdamW learning rate"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps before cosine decay"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and batch order"})

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads ({self.num_attention_heads})")
        if self.vocab_size <= 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must exceed the 256 byte tokens plus specials, got {self.vocab_size}")
        if self.seq_length > self.max_position_embeddings:
            raise ValueError("seq_length must not exceed max_position_embeddings")
        if self.max_steps < 1 or self.warmup_steps >= self.max_steps:
            raise ValueError("max_steps must be >= 1 and larger than warmup_steps")


def stdlib_files(max_bytes: int) -> list[Path]:
    """A deterministic selection of the standard library's top-level modules, up to ``max_bytes``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chosen, total = [], 0
    for path in sorted(root.glob("*.py")):
        size = path.stat().st_size
        if path.name.startswith("_") or total + size > max_bytes:
            continue
        chosen.append(path)
        total += size
    return chosen


def corpus_documents(cfg: TinyBaseConfig) -> list[str]:
    """The pretraining corpus as a list of documents, in a fixed order.

    The kit's prose, the domains' prompt-side text as user turns of the chat template (so the
    base knows the turn markers and the domains' words), the domains' knowledge text (what a
    real base has read about law, first aid and Python), then the standard library's source.
    """
    from .domains import domain_corpus_text, domain_knowledge_text

    docs = [p.read_text(encoding="utf-8") for p in sorted((PACKAGE_DIR / "corpus").glob("*.txt"))]
    docs.extend(f"<|im_start|>user\n{d.strip()}{EOS}" for d in domain_corpus_text(seed=0).split("\n\n") if d.strip())
    if cfg.knowledge_chars_per_domain:
        knowledge = domain_knowledge_text(seed=0, chars_per_domain=cfg.knowledge_chars_per_domain)
        docs.extend(d for d in knowledge.split("\n\n") if d.strip())
    for path in stdlib_files(cfg.stdlib_max_bytes):
        docs.append(path.read_text(encoding="utf-8", errors="replace"))
    return docs


def content_hash(cfg: TinyBaseConfig, docs: list[str]) -> str:
    """Hash of everything the build depends on: config, corpus and this module's code."""
    corpus = [hashlib.sha256(doc.encode("utf-8", errors="replace")).hexdigest() for doc in docs]
    return digest_json({"config": dataclasses.asdict(cfg), "code": source_digest("tiny_base.py"), "corpus": corpus})


def train_tokenizer(docs: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``docs`` and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(docs, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def token_windows(tok, docs: list[str], seq_length: int):
    """The documents tokenized, each between BOS and the end token, joined and cut into equal windows.

    Every document ends with ``<|im_end|>`` (the end-of-turn token, which is also the EOS):
    a base that has predicted it at the end of thousands of texts gives its chat model a
    reply that ends, where one that never saw it learns to stop only slowly.

    Returns:
        A LongTensor of shape ``(n_windows, seq_length)``: every row is one training sequence.
    """
    import torch

    ids: list[int] = []
    for doc in docs:
        ids.append(tok.bos_token_id)
        ids.extend(tok(doc, add_special_tokens=False)["input_ids"])
        if ids[-1] != tok.eos_token_id:
            ids.append(tok.eos_token_id)
    stream = torch.tensor(ids, dtype=torch.long)  # (n_tokens,)
    n_windows = len(stream) // seq_length
    return stream[: n_windows * seq_length].view(n_windows, seq_length)  # (n_windows, seq)


def new_model(cfg: TinyBaseConfig, tok):
    """A freshly initialised (untrained) Llama of the tiny base's shape, for ``tok``'s vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    ))


def pretrain(cfg: TinyBaseConfig, tok, docs: list[str], progress: bool = True, stop_after: int | None = None):
    """Pretrain a fresh Llama on the corpus with next-token prediction.

    Args:
        cfg: the recipe (shape, steps, schedule, seed).
        tok: the tokenizer trained on ``docs``.
        docs: the corpus.
        progress: show a progress bar.
        stop_after: run only the first this many steps of the schedule (a reproducibility check).

    Returns:
        ``(model, history)`` where history lists ``{"step", "loss"}`` every 10 steps.
    """
    import torch
    from tqdm.auto import tqdm

    model = new_model(cfg, tok)
    windows = token_windows(tok, docs, cfg.seq_length)  # (n_windows, seq)
    n_windows = len(windows)
    gen = torch.Generator().manual_seed(cfg.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.1, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    history = []
    model.train()
    bar = tqdm(range(stop_after or cfg.max_steps), desc="pretraining tiny base", disable=not progress)
    per_epoch = n_windows // cfg.batch_size
    for step in bar:
        if step % per_epoch == 0:  # a new epoch: a new order of the windows
            order = torch.randperm(n_windows, generator=gen)
        start = (step % per_epoch) * cfg.batch_size
        batch = windows[order[start : start + cfg.batch_size]]  # (batch, seq)
        for group in optim.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == cfg.max_steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, history


def build_tiny_base(cfg: TinyBaseConfig | None = None, progress: bool = True) -> Path:
    """Return the folder of the tiny base, building it first if it is not cached.

    The folder holds ``model.safetensors``, ``config.json``, the tokenizer files and
    ``build_info.json`` (hash, corpus size, loss history, build time, a sample).

    Args:
        cfg: build settings; the defaults are the kit's tiny base.
        progress: show a progress bar while pretraining.
    """
    cfg = cfg or TinyBaseConfig()
    docs = corpus_documents(cfg)
    digest = content_hash(cfg, docs)
    target = kit_home() / "tiny-base" / digest
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "build_info.json").is_file():
            return target
        import torch

        started = time.time()
        torch.manual_seed(cfg.seed)
        tok = train_tokenizer(docs, cfg.vocab_size)
        model, history = pretrain(cfg, tok, docs, progress=progress)
        sample = sample_text(model, tok, "def ", max_new_tokens=60)
        with atomic_path(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            atomic_write_json(
                tmp / "build_info.json",
                {
                    "content_hash": digest,
                    "config": dataclasses.asdict(cfg),
                    "corpus_documents": len(docs),
                    "corpus_characters": sum(len(d) for d in docs),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "loss_history": history,
                    "build_seconds": round(time.time() - started, 1),
                    "torch_version": torch.__version__,
                    "python_version": platform.python_version(),
                    "sample": sample,
                },
            )
    return target


def sample_text(model, tok, prompt: str, max_new_tokens: int = 48) -> str:
    """Greedy continuation of ``prompt`` with a repetition penalty (deterministic)."""
    import torch

    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.3, pad_token_id=tok.pad_token_id
        )
    return tok.decode(out[0], skip_special_tokens=False)


def shipped_base_dir() -> Path:
    """The tiny base that ships inside the package: what ``model.name: tiny-base`` loads, in a second.

    Raises:
        FileNotFoundError: the package was built without it (rebuild with ``python -m course_lib.tiny_base ship``).
    """
    if not (SHIPPED_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(f"no shipped tiny base in {SHIPPED_DIR}; run `python -m course_lib.tiny_base ship` "
                                "in a source checkout, or name a model folder in the profile")
    return SHIPPED_DIR


def ship(cfg: TinyBaseConfig | None = None, progress: bool = True) -> Path:
    """Build (or find) the tiny base of ``cfg`` and write it, in half precision, where the package ships it.

    Half precision halves the download; loading upcasts to the profile's dtype, and the
    ``tests/test_tiny_base.py`` checks that the shipped weights give the full-precision losses.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    built = build_tiny_base(cfg, progress=progress)
    tok = AutoTokenizer.from_pretrained(built)
    full = AutoModelForCausalLM.from_pretrained(built, dtype=torch.float32).eval()
    info = json.loads((built / "build_info.json").read_text())
    info["probe_loss"] = {"float32": probe_loss(full, tok), "float16": probe_loss(full.half().float(), tok)}
    with atomic_path(SHIPPED_DIR) as tmp:
        full.half().save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / "build_info.json", info)
    return SHIPPED_DIR


def probe_loss(model, tok) -> float:
    """The model's next-token loss on :data:`PROBE_TEXT`."""
    import torch

    ids = tok(PROBE_TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def check_rebuild(steps: int = 21, base: Path | None = None) -> dict:
    """Rebuild the shipped base's first ``steps`` pretraining steps from source and compare.

    Trains the tokenizer again on the same corpus and replays the start of the recipe. The
    rebuilt tokenizer must equal the shipped one token for token, and each logged loss must
    lie within :data:`LOSS_TOLERANCE` (relative) of the shipped build's loss at that step.

    Returns:
        ``{"same_tokenizer", "shipped", "rebuilt", "max_relative_gap", "within_tolerance", "comparable"}``;
        ``comparable`` is False (and nothing is compared) when this Python's standard library,
        part of the corpus, is not the one the base was built with.
    """
    from transformers import AutoTokenizer

    base = base or shipped_base_dir()
    info = json.loads((base / "build_info.json").read_text())
    if info.get("python_version") != platform.python_version():
        return {"comparable": False, "built_with": info.get("python_version"), "this_python": platform.python_version()}
    cfg = TinyBaseConfig(**info["config"])
    docs = corpus_documents(cfg)
    tok = train_tokenizer(docs, cfg.vocab_size)
    same = tok.get_vocab() == AutoTokenizer.from_pretrained(base).get_vocab()
    _, history = pretrain(cfg, tok, docs, progress=False, stop_after=steps)
    shipped = {h["step"]: h["loss"] for h in info["loss_history"]}
    rebuilt = {h["step"]: h["loss"] for h in history if h["step"] in shipped}
    gap = max(abs(rebuilt[s] - shipped[s]) / shipped[s] for s in rebuilt)
    return {"comparable": True, "same_tokenizer": same, "shipped": {s: shipped[s] for s in rebuilt}, "rebuilt": rebuilt,
            "max_relative_gap": gap, "within_tolerance": same and gap <= LOSS_TOLERANCE}


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.tiny_base build|ship|check``: build the recipe, ship it, or check a rebuild."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_lib.tiny_base", description=main.__doc__)
    parser.add_argument("command", choices=("build", "ship", "check"),
                        help="build: into the cache; ship: into course_lib/assets/tiny-base; check: rebuild the start and compare")
    parser.add_argument("--steps", type=int, default=21, help="pretraining steps replayed by check")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_tiny_base())
    elif args.command == "ship":
        print(ship())
    else:
        report = check_rebuild(args.steps)
        print(report)
        return 0 if report.get("within_tolerance", True) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
