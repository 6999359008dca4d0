"""The memory planner: how much memory each stage needs at its peak, and which GPUs it fits.

The prediction is arithmetic on the model's config (no weights are read or downloaded) and
the profile (precision, 4-bit, LoRA shape, optimizer, batch, sequence length, gradient
checkpointing), per stage, from what that stage really holds:

- ``sft``: the policy (base + LoRA), its batch of sequences, the LM head's logits;
- ``reward``: the base with a scalar head (no vocabulary logits), two sequences per pair;
- ``dpo``: the policy, whose adapter switched off is the reference (no second copy), and
  chosen + rejected per pair; TRL runs the reference's no-grad pass after the policy's forward,
  beside the policy's saved activations (precomputed reference log-probs remove that pass);
- ``ppo``: the policy (its adapter off is the reference), a value model and each reward-model
  member, each a copy of the SFT weights with its own adapter (``stages/ppo.py``); AdamW over the
  policy's and the value model's adapters; the larger of the rollout (KV cache, scoring passes)
  and a minibatch update.

Validated against measured peaks on CPU in ``docs/memory_planner.md``. Shown in ``00_setup``
(the table of every stage against common GPUs) and in each stage's notebook (one line).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import TINY_BASE, Profile, check_fields, load_profile
from .errors import ConfigError

STAGES = ("sft", "reward", "ppo", "dpo")
COMMON_GPUS_GB = (16, 24, 40, 80)
"""Memory of common GPUs as sold, in GB (10^9 bytes): T4 / V100-16, A10 / L4 / RTX 4090, A100-40, A100-80 / H100."""
CUDA_CONTEXT_GIB = 1.0
"""What a CUDA process holds outside its tensors: the context, cuBLAS workspaces, the kernels' images."""
FRAGMENTATION = 0.10
"""Share added to the tensors' peak for the caching allocator's fragmentation."""
NF4_BLOCK = 64
"""Weights per 4-bit quantization block (one absmax constant each)."""
DOUBLE_QUANT_BLOCK = 256
"""Absmax constants per second-level block under double quantization (one fp32 constant each)."""
BNB_8BIT_MIN_SIZE = 4096
"""bitsandbytes keeps the state of tensors smaller than this in 32 bits even with an 8-bit optimizer."""
FUSED_HEAD_TILE = (4096, 32768)
"""TRL's fused LM head projects ``(tokens, vocabulary)`` tiles of this size on a GPU, never the full logits."""
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B-Instruct": dict(
        model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, attention_bias=True),
}
"""Configs of the shipped profiles' hub models, so the planner answers offline with an empty cache."""
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder (Llama, Qwen2, Mistral) that its memory depends on.

    Attributes:
        hidden_size: width of the residual stream.
        num_hidden_layers: decoder blocks.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (fewer than the query heads under grouped-query attention).
        head_dim: width of one head.
        intermediate_size: MLP inner width.
        vocab_size: vocabulary (rows of the embedding and of the LM head).
        tie_word_embeddings: the LM head shares the embedding's weights.
        attention_bias: the q, k, v projections carry a bias (Qwen2).
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = True
    attention_bias: bool = False

    def linears(self) -> dict[str, tuple[int, int]]:
        """``(in_features, out_features)`` of each linear layer of one block, by its module name."""
        h, q, kv, i = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim, \
            self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_parameters(self) -> int:
        """Weights of the blocks' linear layers, all blocks: what 4-bit quantization packs."""
        return self.num_hidden_layers * sum(a * b for a, b in self.linears().values())

    @property
    def other_parameters(self) -> int:
        """Embedding, untied LM head, norms and biases: what stays in 16 or 32 bits under 4-bit."""
        h, layers = self.hidden_size, self.num_hidden_layers
        bias = (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim if self.attention_bias else 0
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + head + layers * (2 * h + bias) + h

    @property
    def parameters(self) -> int:
        """Every parameter of the causal LM."""
        return self.linear_parameters + self.other_parameters


def shape_from_config(config: Any) -> ModelShape:
    """A :class:`ModelShape` from a ``transformers`` config or the dict of a ``config.json``.

    Raises:
        ConfigError: the config lacks a decoder's sizes (not a Llama-style model).
    """
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
               if get(k) is None]
    if missing:
        raise ConfigError(f"the memory planner reads Llama-style decoder configs; this one ({get('model_type')}) has no "
                          f"{', '.join(missing)}", key="model.name")
    heads = int(get("num_attention_heads"))
    return ModelShape(
        hidden_size=int(get("hidden_size")), num_hidden_layers=int(get("num_hidden_layers")), num_attention_heads=heads,
        num_key_value_heads=int(get("num_key_value_heads") or heads),
        head_dim=int(get("head_dim") or int(get("hidden_size")) // heads),
        intermediate_size=int(get("intermediate_size")), vocab_size=int(get("vocab_size")),
        tie_word_embeddings=bool(get("tie_word_embeddings", True)),
        attention_bias=bool(get("attention_bias", False)) or get("model_type") == "qwen2",
    )


def model_shape(model: Any) -> ModelShape:
    """The shape of a model named as a profile names it, or given as a config, without loading weights.

    Args:
        model: ``tiny-base``; a local folder holding ``config.json``; a hub id (the shipped profiles'
            models are known; any other must be in the local hub cache: nothing is downloaded); a
            ``transformers`` config or a ``config.json`` dict; or a :class:`ModelShape`.

    Raises:
        ConfigError: a folder without ``config.json``, or a hub id that is neither known nor cached.
    """
    if isinstance(model, ModelShape):
        return model
    if not isinstance(model, (str, Path)):
        return shape_from_config(model)
    name = str(model)
    if name == TINY_BASE:
        from .tiny_base import shipped_base_dir

        return _shape_of_folder(shipped_base_dir())
    local = Path(name).expanduser()
    if local.exists() or name.startswith(("/", "./", "../", "~")):
        return _shape_of_folder(local)
    if name in KNOWN_CONFIGS:
        return shape_from_config(KNOWN_CONFIGS[name])
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")  # reads the local cache only, never the network
    except ValueError:  # not a valid hub id either
        cached = None
    if isinstance(cached, str):
        return _shape_of_folder(Path(cached).parent)
    raise ConfigError(f"the memory planner cannot size {name!r}: it is not a local folder, not one of the shipped "
                      f"profiles' models ({', '.join(KNOWN_CONFIGS)}) and its config.json is not in the local hub cache; "
                      "download the model once, or pass a local folder or a transformers config", key="model.name")


def _shape_of_folder(folder: Path) -> ModelShape:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"model folder {folder} holds no config.json (expected a saved transformers model)", key="model.name")
    return shape_from_config(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class MemoryPlanConfig:
    """What the planner assumes beyond the profile.

    Parameters that shape the batch:
        stage, batch_size, seq_length, device.
    Parameters of the PPO stage (its defaults are ``PPOStageConfig``'s):
        ppo_batch_size, ppo_minibatch_size, max_new_tokens, reward_members.
    Parameters of the DPO stage:
        precompute_ref_log_probs.
    ``None`` means "take it from the profile".
    """

    stage: str = field(default="sft", metadata={"help": f"the stage to plan: one of {', '.join(STAGES)}"})
    batch_size: int | None = field(default=None, metadata={"help": "sequences (SFT) or pairs (reward, DPO) per device per step; None = the profile's", "min": 1})
    seq_length: int | None = field(default=None, metadata={"help": "tokens per sequence, the worst case; None = the profile's max_seq_length", "min": 1})
    device: str | None = field(default=None, metadata={"help": "where it runs (GPU: TRL's fused LM head, 16-bit auto dtype); None = the profile's"})
    ppo_batch_size: int = field(default=16, metadata={"help": "PPO prompts sampled per iteration", "min": 1})
    ppo_minibatch_size: int = field(default=8, metadata={"help": "PPO replies per gradient step", "min": 1})
    max_new_tokens: int = field(default=96, metadata={"help": "longest PPO reply, in tokens", "min": 1})
    reward_members: int = field(default=2, metadata={"help": "reward-model ensemble members PPO holds", "min": 1})
    precompute_ref_log_probs: bool = field(default=False, metadata={"help": "DPO: the reference's log-probs computed once before training"})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.stage not in STAGES:
            raise ConfigError(f"expected one of {', '.join(STAGES)}, got {self.stage!r}", key="stage")
        if self.device not in (None, "cuda", "cpu"):
            raise ConfigError(f"expected cuda, cpu or None, got {self.device!r}", key="device")


@dataclass
class MemoryPlan:
    """A stage's predicted peak, in bytes, by part.

    Attributes:
        stage: the stage.
        model: what the model was named.
        parameters: the base model's parameter count.
        trainable: parameters that train (LoRA, the reward and value heads).
        parts: bytes by part (``weights``, ``lora``, ``gradients``, ``optimizer``, ``activations``).
        notes: what the numbers assume, one line each.
    """

    stage: str
    model: str
    parameters: int
    trainable: int
    parts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """The tensors' peak: every part at once."""
        return sum(self.parts.values())

    @property
    def total_gib(self) -> float:
        return self.total_bytes / 2**30

    def needed_gib(self) -> float:
        """What a GPU must have: the tensors' peak plus fragmentation and the CUDA context."""
        return self.total_gib * (1 + FRAGMENTATION) + CUDA_CONTEXT_GIB

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_gib": round(self.total_gib, 3), "needed_gib": round(self.needed_gib(), 3)}


def _dtype_bytes(profile: Profile, device: str) -> tuple[int, int]:
    """Bytes per element of the unquantized weights and of the activations (the compute dtype)."""
    def resolve(name: str) -> int:
        return BYTES[name] if name != "auto" else (2 if device == "cuda" else 4)

    weights = resolve(profile.model.dtype)
    compute = resolve(profile.quantization.compute_dtype) if profile.quantization.load_in_4bit else weights
    return weights, compute


def four_bit_bytes(parameters: int, double_quant: bool) -> float:
    """Bytes of ``parameters`` weights in 4-bit NF4/FP4: half a byte each, plus the blocks' absmax constants.

    One constant per 64 weights: fp32 (0.0625 bytes per weight), or, with double quantization,
    8 bits plus one fp32 per 256 constants (about 0.0159 bytes per weight).
    """
    blocks = parameters / NF4_BLOCK
    constants = blocks * 1 + blocks / DOUBLE_QUANT_BLOCK * 4 if double_quant else blocks * 4
    return parameters * 0.5 + constants


def lora_parameters(shape: ModelShape, r: int, target_modules: str) -> int:
    """Parameters of a LoRA adapter: ``r * (in + out)`` for each targeted linear layer of each block.

    ``all-linear`` targets every linear layer of the blocks, not the LM head (peft's rule).

    Raises:
        ConfigError: a target list naming no linear layer of the model.
    """
    linears = shape.linears()
    if target_modules == "all-linear":
        chosen = list(linears)
    else:
        chosen = [name for name in (t.strip() for t in target_modules.split(",")) if name in linears]
        if not chosen:
            raise ConfigError(f"no linear layer of the model is named in {target_modules!r} (its layers: "
                              f"{', '.join(linears)})", key="lora.target_modules")
    return shape.num_hidden_layers * sum(r * sum(linears[name]) for name in chosen)


def optimizer_bytes(optim: str, tensors: list[int], value_bytes: int = 4) -> int:
    """Bytes of optimizer state for trainable tensors of the given sizes.

    AdamW keeps two fp32 moments (8 bytes per parameter); the 8-bit AdamW of bitsandbytes
    (``adamw_8bit``, ``paged_adamw_8bit``) two 8-bit moments with a constant per 2048 values,
    except for tensors under 4096 values, kept in 32 bits. ``paged`` state may move to CPU memory
    under pressure; it is counted on the GPU here, the worst case. SGD without momentum keeps none.

    Args:
        optim: the optimizer's ``transformers`` name (``adamw_torch``, ``paged_adamw_8bit``, ...).
        tensors: the number of values of each trainable tensor.
        value_bytes: bytes of a 32-bit optimizer's state value: the parameters' dtype (fp32 adapters: 4).
    """
    name = optim.lower()
    if "sgd" in name:
        return 0
    per_value = 1 if "lion" in name else 2  # moments
    if "8bit" in name:
        return int(sum(per_value * (n + n / 2048 * 4) if n >= BNB_8BIT_MIN_SIZE else per_value * 4 * n for n in tensors))
    return per_value * value_bytes * sum(tensors)


def _lora_tensors(shape: ModelShape, r: int, target_modules: str) -> list[int]:
    """Sizes of each LoRA matrix (A and B of each targeted layer), for the 8-bit optimizer's size rule."""
    linears = shape.linears()
    names = list(linears) if target_modules == "all-linear" else [t.strip() for t in target_modules.split(",") if t.strip() in linears]
    return [n for name in names for n in (r * linears[name][0], r * linears[name][1])] * shape.num_hidden_layers


def layer_activation_bytes(shape: ModelShape, tokens: int, seq_length: int, compute: int, lora_dropout: bool) -> int:
    """Bytes one decoder block saves for its backward pass, for ``tokens`` tokens (batch x sequence).

    Counted from what autograd keeps: each RMSNorm its fp32 input, its normalized fp32 value and
    its output (12 bytes per hidden value whatever the dtype); attention (SDPA, no ``seq^2``
    matrix) its queries, keys and values (keys and values repeated to every query head), its output
    and its per-head log-sum-exp, and the output's contiguous copy that ``o_proj`` reads; the MLP its
    gate, its activation, its up projection and their product. With LoRA dropout, each adapted
    layer also keeps its dropped-out input and a mask.
    """
    h, i, q = shape.hidden_size, shape.intermediate_size, shape.num_attention_heads * shape.head_dim
    per_token = 2 * 12 * h + (4 * q + q) * compute + 4 * shape.num_attention_heads + 4 * i * compute
    if lora_dropout:
        per_token += (3 * h + q + 2 * h + i) * (compute + 1)
    return tokens * per_token


def _logits_bytes(shape: ModelShape, tokens: int, compute: int, fused: bool, reference_pass: bool) -> int:
    """The LM head's peak beside the blocks' activations.

    On a GPU TRL projects ``(4096 tokens, 32768 vocabulary)`` tiles (one, and its gradient), never
    the full logits. On a CPU the kit computes full logits, their fp32 log-softmax (kept for the
    backward) and, for the logged entropy, its exponential: three ``(tokens, vocab)`` tensors at
    once (four with 16-bit logits). TRL's DPO runs the reference's no-grad pass *after* the
    policy's forward, while the policy's log-softmax is kept: one more such tensor at the peak.
    """
    if fused:
        return 2 * min(tokens, FUSED_HEAD_TILE[0]) * min(shape.vocab_size, FUSED_HEAD_TILE[1]) * compute
    per_pass = tokens * shape.vocab_size * (3 * 4 + (compute if compute != 4 else 0))
    return per_pass + (tokens * shape.vocab_size * 4 if reference_pass else 0)


def _training_activations(shape: ModelShape, sequences: int, seq_length: int, compute: int, checkpointing: bool,
                          lora_dropout: bool, vocab_logits: bool, fused: bool, reference_pass: bool = False) -> int:
    """Peak activation bytes of one forward and backward over ``sequences`` sequences of ``seq_length`` tokens."""
    tokens = sequences * seq_length
    layer = layer_activation_bytes(shape, tokens, seq_length, compute, lora_dropout)
    if checkpointing:  # each block keeps its input; one block's activations exist again while it is recomputed
        blocks = shape.num_hidden_layers * tokens * shape.hidden_size * compute + layer
    else:
        blocks = shape.num_hidden_layers * layer
    final_norm = tokens * 12 * shape.hidden_size
    mask = sequences * seq_length * seq_length  # the 4D boolean attention mask of a padded batch
    head = _logits_bytes(shape, tokens, compute, fused, reference_pass) if vocab_logits else tokens * 4
    return blocks + final_norm + mask + head


def plan_memory(profile: Profile | str, stage: str = "sft", model: Any = None,
                config: MemoryPlanConfig | None = None) -> MemoryPlan:
    """Predict a stage's peak memory under a profile, part by part.

    Args:
        profile: a :class:`~course_lib.config.Profile` or a profile name or path.
        stage: ``sft``, ``reward``, ``ppo`` or ``dpo`` (``config.stage`` when a config is given).
        model: the model to size (see :func:`model_shape`); None = the profile's ``model.name``.
        config: batch, length, device and PPO assumptions; None = the profile's and the stages' defaults.

    Returns:
        The :class:`MemoryPlan`: bytes by part, their sum the tensors' peak.

    Raises:
        ConfigError: an unknown stage, or a model the planner cannot size offline.
    """
    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    config = config or MemoryPlanConfig(stage=stage)
    shape = model_shape(profile.model.name if model is None else model)
    device = config.device or ("cpu" if profile.device == "cpu" else "cuda")
    weight_bytes, compute = _dtype_bytes(profile, device)
    four_bit = profile.quantization.load_in_4bit
    lora, train = profile.lora, profile.training
    batch = config.batch_size or train.per_device_batch_size
    seq = config.seq_length or profile.model.max_seq_length
    dropout = lora.enabled and lora.dropout > 0
    fused = device == "cuda"
    notes = []

    def copy_bytes(trainable: bool) -> float:
        """One copy of the base weights. A 4-bit model prepared for training holds its unquantized
        parts (embedding, norms) in fp32 (peft's ``prepare_model_for_kbit_training``)."""
        if four_bit:
            return four_bit_bytes(shape.linear_parameters, profile.quantization.double_quant) + \
                shape.other_parameters * (4 if trainable else compute)
        return shape.parameters * weight_bytes

    head = shape.hidden_size  # a scalar head; peft trains a copy of it (modules_to_save) beside the original
    body = shape.parameters - (0 if shape.tie_word_embeddings else shape.vocab_size * shape.hidden_size)  # no LM head
    # The reward model (and PPO's value model, started from it) trains whole where lora.reward is false.
    score_adapter = lora.enabled and lora.reward
    stage_adapter = score_adapter if config.stage == "reward" else lora.enabled
    head_bytes = (2 if score_adapter else 1) * head * 4
    if stage_adapter:
        adapter = lora_parameters(shape, lora.r, lora.target_modules)
        adapter_tensors = _lora_tensors(shape, lora.r, lora.target_modules)
        trainable_bytes = 4  # peft keeps adapters in fp32
    else:  # full fine-tuning: the weights themselves train, in their own dtype (a scalar-head model has no LM head)
        adapter = body if config.stage == "reward" else shape.parameters
        adapter_tensors, trainable_bytes = [adapter], weight_bytes
        if config.stage != "ppo":
            notes.append(("LoRA off" if not lora.enabled else "lora.reward is false") +
                         ": every weight trains (gradients and optimizer state for all of them)")
    adapter_bytes = adapter * 4 if stage_adapter else 0  # full fine-tuning's weights are already in "weights"

    if config.stage in ("sft", "dpo", "reward"):
        sequences = batch * (1 if config.stage == "sft" else 2)  # a pair is two sequences (chosen, rejected)
        trainable = adapter + (head if config.stage == "reward" else 0)
        tensors = adapter_tensors + ([head] if config.stage == "reward" else [])
        weights = copy_bytes(trainable=True)
        reference_pass = config.stage == "dpo" and not config.precompute_ref_log_probs
        activations = _training_activations(shape, sequences, seq, compute, train.gradient_checkpointing, dropout,
                                            vocab_logits=config.stage != "reward", fused=fused,
                                            reference_pass=reference_pass)
        parts = {"weights": weights, "lora": adapter_bytes + (head_bytes if config.stage == "reward" else 0),
                 "gradients": trainable * trainable_bytes,
                 "optimizer": optimizer_bytes(train.optim, tensors, trainable_bytes), "activations": activations}
        if config.stage == "dpo":
            notes.append("reference = the policy with its adapter off: no second copy of the weights; "
                         + ("its log-probs precomputed before training" if config.precompute_ref_log_probs else
                            "its no-grad pass runs after the policy's forward, beside the policy's saved activations"))
        if config.stage == "reward":
            notes.append("a scalar head instead of the LM head: no vocabulary logits")
    else:  # the kit's PPO puts a LoRA adapter on the policy whatever lora.enabled says
        members = config.reward_members
        adapter = lora_parameters(shape, lora.r, lora.target_modules)
        adapter_tensors, adapter_bytes = _lora_tensors(shape, lora.r, lora.target_modules), adapter * 4
        value, value_tensors = (adapter + head, adapter_tensors + [head]) if score_adapter else (body + head, [body, head])
        value_extras = adapter_bytes + head_bytes if score_adapter else 0  # a value model trained whole is its own copy
        trainable = adapter + value  # the policy's adapter; the value model's adapter and head, or all its weights
        weights = copy_bytes(trainable=True) * 2 + copy_bytes(trainable=False) * members \
            + members * value_extras  # frozen reward members carry their adapters and heads
        rollout_seq = seq
        kv_cache = (config.ppo_batch_size * rollout_seq * shape.num_hidden_layers * 2 * shape.num_key_value_heads
                    * shape.head_dim * compute)
        # Scoring the rollout without gradients: full logits of the whole batch (the kit's own pass, on any device).
        scoring = config.ppo_batch_size * rollout_seq * shape.vocab_size * compute \
            + 2 * config.ppo_batch_size * config.max_new_tokens * shape.vocab_size * 4
        rollout = max(kv_cache, scoring)
        mini = config.ppo_minibatch_size
        policy_pass = _training_activations(shape, mini, rollout_seq, compute, train.gradient_checkpointing, dropout,
                                            vocab_logits=False, fused=False) \
            + mini * rollout_seq * shape.vocab_size * compute + 2 * mini * config.max_new_tokens * shape.vocab_size * 4
        value_pass = _training_activations(shape, mini, rollout_seq, compute, train.gradient_checkpointing, dropout,
                                           vocab_logits=False, fused=False)
        parts = {"weights": weights, "lora": adapter_bytes + value_extras,
                 "gradients": adapter * 4 + value * (4 if score_adapter else weight_bytes),
                 "optimizer": optimizer_bytes("adamw_torch", adapter_tensors + value_tensors),
                 "activations": max(rollout, policy_pass + value_pass)}
        notes.append(f"holds {2 + members} copies of the SFT weights: policy (its adapter off is the reference), value "
                     f"model, {members} reward member(s); AdamW (fp32) over the policy's adapter and the value model's "
                     + ("adapter" if score_adapter else "weights (trained whole: lora.reward is false)"))
        notes.append(f"rollout: {config.ppo_batch_size} prompts up to {rollout_seq} tokens; update: minibatches of {mini}")
    if four_bit:
        notes.append(f"4-bit {profile.quantization.quant_type}: {four_bit_bytes(1, profile.quantization.double_quant):.3f} "
                     "bytes per linear weight" + (" (double quantization)" if profile.quantization.double_quant else ""))
    notes.append(f"{device}: {'TRL fused LM head (logit tiles)' if fused else 'full logits'}; gradient checkpointing "
                 f"{'on' if train.gradient_checkpointing else 'off'}; batch {batch}, {seq} tokens")
    return MemoryPlan(stage=config.stage, model=str(profile.model.name if model is None else model),
                      parameters=shape.parameters, trainable=trainable,
                      parts={k: int(v) for k, v in parts.items()}, notes=notes)


def _verdict(needed_gib: float, tensors_gib: float, gpu_gb: int) -> str:
    """``fits``, ``tight`` (fits without the safety margin only) or ``no`` for a GPU of ``gpu_gb`` GB."""
    capacity = gpu_gb * 1e9 / 2**30
    return "fits" if needed_gib <= capacity else "tight" if tensors_gib + CUDA_CONTEXT_GIB <= capacity else "no"


def gpu_fit_table(profile: Profile | str, model: Any = None, stages: tuple[str, ...] | list[str] = STAGES,
                  gpus_gb: tuple[int, ...] = COMMON_GPUS_GB, config: MemoryPlanConfig | None = None) -> list[dict[str, Any]]:
    """Which common GPUs each stage fits on, planned for a GPU (``device="cuda"``).

    Args:
        profile: a profile or its name.
        model: the model to size; None = the profile's.
        stages: the stages to plan.
        gpus_gb: GPU memory sizes as sold, in GB.
        config: batch, length and PPO assumptions (its stage and device are set here).

    Returns:
        One dict per stage (``pandas.DataFrame(rows)`` shows it as a table): ``stage``, ``peak_gib``
        (the tensors), ``needed_gib`` (plus 10% fragmentation and 1 GiB of CUDA context), then one
        column per GPU, ``"16 GB"``: ``fits``, ``tight`` (only without the margin) or ``no``.
    """
    from dataclasses import replace

    base = config or MemoryPlanConfig()
    rows = []
    for stage in stages:
        plan = plan_memory(profile, stage, model, replace(base, stage=stage, device="cuda"))
        row = {"stage": stage, "peak_gib": round(plan.total_gib, 2), "needed_gib": round(plan.needed_gib(), 2)}
        row.update({f"{gb} GB": _verdict(plan.needed_gib(), plan.total_gib, gb) for gb in gpus_gb})
        rows.append(row)
    return rows


def gpu_fit_summary(profiles: Profile | str | Sequence[Profile | str], stages: tuple[str, ...] | list[str] | str = STAGES,
                    model: Any = None) -> str:
    """One line per profile and stage: its planned GPU memory and the common GPUs it fits; what the notebooks print.

    Args:
        profiles: a profile or its name, or several (a notebook passes its own and the shipped
            ``gpu-qlora``); a profile named twice is planned once.
        stages: a stage or stages.
        model: the model to size; None = each profile's.

    Returns:
        Lines such as ``"ppo on gpu-qlora (Qwen/...): about 9.1 GiB with margin; fits 16, 24, 40, 80 GB"``.
    """
    chosen = [profiles] if isinstance(profiles, (Profile, str)) else list(profiles)
    planned: dict[str, Profile] = {}
    for profile in chosen:
        profile = profile if isinstance(profile, Profile) else load_profile(profile)
        planned.setdefault(profile.name, profile)
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    lines = []
    for profile in planned.values():
        for row in gpu_fit_table(profile, model, stages):
            sizes = [key.split()[0] for key, value in row.items() if key.endswith(" GB") and value == "fits"]
            tight = [key.split()[0] for key, value in row.items() if key.endswith(" GB") and value == "tight"]
            fits = f"fits {', '.join(sizes)} GB" if sizes else "fits none of 16, 24, 40, 80 GB"
            lines.append(f"{row['stage']} on {profile.name} ({profile.model.name if model is None else model}): about "
                         f"{row['needed_gib']} GiB on a GPU with margin ({row['peak_gib']} GiB of tensors); {fits}"
                         + (f"; tight on {', '.join(tight)} GB" if tight else ""))
    return "\n".join(lines)
