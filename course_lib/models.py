"""Loading models and tokenizers: the tiny base, a local folder or a hub id; 4-bit; LoRA.

Every stage loads through here so that the precision, quantization, LoRA shape and
safety switches come from the profile. Safe loading: weights load from safetensors only
(a pickle checkpoint such as ``pytorch_model.bin`` can run code when unpickled, so a folder
holding only pickles is refused before anything opens it), and code shipped with a model
(``auto_map``) runs only when the profile sets ``model.trust_remote_code``.
Introduced in ``00_setup``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import TINY_BASE, Profile
from .errors import ConfigError
from .tiny_base import CHAT_TEMPLATE

_LOCAL_PREFIXES = ("/", "./", "../", "~")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Checkpoint files that are Python pickles: never loaded."""


def detect_device(requested: str = "auto") -> str:
    """Pick the device a profile asks for: ``cuda`` if asked or if auto finds a GPU, else ``cpu``.

    Raises:
        ConfigError: the profile asks for ``cuda`` and no GPU is visible.
    """
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ConfigError(
            "the profile asks for device 'cuda' but no GPU is visible; use the tiny-cpu profile or set device: cpu",
            key="device",
        )
    return "cpu"


def process_device(device: str) -> str:
    """The torch device this process loads onto: ``cuda:<LOCAL_RANK>`` on a GPU (``cuda:0`` outside a
    launcher), ``cpu`` on the CPU. Under ``accelerate launch`` or ``torchrun`` each data-parallel process
    loads its own copy of the model onto its own GPU; without the rank, every copy would land on GPU 0."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if device == "cuda" else device


def require_safetensors(folder: str | Path) -> None:
    """Refuse a model or adapter folder whose weights are not safetensors, before any library opens them.

    A pickle checkpoint (``pytorch_model.bin``, ``adapter_model.bin``, ``*.pt``) runs whatever code
    it names when it is unpickled; a safetensors file holds tensors only. An adapter's base model,
    when it is a local folder, is checked too.

    Raises:
        ConfigError: naming the folder, the pickle files it holds and how to convert them.
    """
    folder = Path(folder)
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
        found = f"only pickle checkpoints ({', '.join(pickles)})" if pickles else "no *.safetensors weights"
        raise ConfigError(
            f"model folder {folder} holds {found}; the kit loads safetensors only, because loading a pickle can "
            "run any code it carries. Convert it once, where you trust the file: load it with transformers (peft "
            "for an adapter) and save_pretrained() it, which writes safetensors, e.g. python -c \"from transformers "
            f"import AutoModelForCausalLM as M; M.from_pretrained('{folder}').save_pretrained('{folder}-safetensors')\"; "
            "then name the new folder",
            key="model.name",
        )
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        base = _read_json(adapter).get("base_model_name_or_path") or ""
        if Path(base).expanduser().is_dir():
            require_safetensors(Path(base).expanduser())


def refuse_remote_code(folder: str | Path, trust_remote_code: bool) -> None:
    """Refuse a local folder that ships its own model or tokenizer code unless the profile trusts it.

    Such a folder names Python classes in ``auto_map`` (``config.json``, ``tokenizer_config.json``);
    loading it with ``trust_remote_code`` would import and run that code.

    Raises:
        ConfigError: naming the folder and the file that asks for code to run.
    """
    if trust_remote_code:
        return
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(folder) / name
        if path.is_file() and "auto_map" in _read_json(path):
            raise ConfigError(
                f"model folder {folder} ships its own code ('auto_map' in {name}), which the kit does not run "
                "unless the profile sets model.trust_remote_code: true; set it only for code you have read",
                key="model.trust_remote_code",
            )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}", key="model.name") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds a {type(value).__name__}, expected a JSON object", key="model.name")
    return value


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_model_path(name: str) -> str:
    """Turn a profile's model name into something ``from_pretrained`` can load.

    ``tiny-base`` is the embedded model the package ships; an existing folder is used as is;
    anything else is a hub id, which fails fast with a clear message when the hub is
    offline or unreachable and the model is not in the local cache.

    Raises:
        ConfigError: a local folder that does not exist or holds no ``config.json``, or a
            hub id that is not cached while the hub is offline or cannot be reached.
    """
    if name == TINY_BASE:
        from .tiny_base import shipped_base_dir

        return str(shipped_base_dir())
    local = Path(name).expanduser()
    if local.exists() or name.startswith(_LOCAL_PREFIXES):
        if not local.is_dir():
            raise ConfigError(f"model folder {local} does not exist", key="model.name")
        if not (local / "config.json").is_file() and not (local / "adapter_config.json").is_file():
            raise ConfigError(f"model folder {local} holds no config.json (expected a saved transformers model)", key="model.name")
        return str(local)
    offline = _hub_offline()
    unreachable = None if offline else _hub_unreachable(_hub_endpoint())
    if offline or unreachable:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            # A cached copy is used as a local folder, so nothing tries the network again.
            return snapshot_download(name, local_files_only=True)
        except (LocalEntryNotFoundError, OSError, ValueError):
            why = "the hub is offline (HF_HUB_OFFLINE=1)" if offline else f"the kit cannot reach the hub ({unreachable})"
            raise ConfigError(
                f"{name!r} is a hub id, {why} and it is not in the local cache; download it once with network "
                "access (or set HF_HUB_OFFLINE=1 to use only what is cached), or name a local folder or 'tiny-base'",
                key="model.name",
            ) from None
    return name


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@functools.cache
def _hub_unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why ``endpoint`` cannot be reached (one TCP connection), or None when it can; asked once per process.

    Without this, a machine with no route out spends minutes in the hub client's retries
    before transformers gives up with a generic message.
    """
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"{url.hostname}:{port}: {err.strerror or err}"
    return None


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def ensure_training_template(tok) -> None:
    """Make sure the chat template marks assistant turns with ``{% generation %}``.

    TRL's assistant-only loss asks the template for an assistant mask, which only a
    template with generation blocks can give. ChatML tokenizers (the tiny base, Qwen)
    get the kit's ChatML template; others must bring their own.

    Raises:
        ConfigError: the template has no generation blocks and is not ChatML.
    """
    template = tok.chat_template or ""
    if "{% generation %}" in template or "{%- generation %}" in template:
        return
    if "<|im_start|>" in tok.get_vocab():
        tok.chat_template = CHAT_TEMPLATE
        return
    raise ConfigError(
        "the tokenizer's chat template has no {% generation %} blocks, so assistant-only loss cannot "
        "find the assistant tokens; set tokenizer.chat_template to a template that wraps assistant "
        "content in {% generation %}...{% endgeneration %}",
        key="model.name",
    )


def load_tokenizer(profile: Profile, path: str | None = None):
    """Load the tokenizer of the profile's model (or of ``path``), ready for training.

    Adds a pad token if missing, pads on the right, and ensures a training chat template.
    """
    from transformers import AutoTokenizer

    source = path or resolve_model_path(profile.model.name)
    if Path(source).is_dir():
        refuse_remote_code(source, profile.model.trust_remote_code)
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=profile.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    ensure_training_template(tok)
    return tok


def quantization_config(profile: Profile):
    """The bitsandbytes 4-bit config of the profile, or ``None`` when it loads full precision."""
    q = profile.quantization
    if not q.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    from .preflight import resolved_precision

    compute = resolved_precision(profile)["compute_dtype"]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=_torch_dtype(compute),
        bnb_4bit_quant_storage=_torch_dtype(compute),
    )


def _keep_4bit_weights_differentiable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference in a model that will train (a no-op on GPU).

    On CPUs with AVX512-BF16, a ``Linear4bit`` that runs once in eval mode without gradients
    (an evaluation pass, sampling before an update) converts its weight to a packed layout for
    good, and every later forward, in training too, goes through ``gemv_4bit``, which has no
    backward: gradients would stop at each 4-bit layer (torch warns "silently incorrect
    behavior"). Training keeps the layout that ``MatMul4Bit`` differentiates.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_model(profile: Profile, path: str | None = None, *, num_labels: int | None = None, for_training: bool = True):
    """Load the profile's base model (or ``path``) with its precision and quantization.

    Args:
        profile: the profile naming the model, dtype and 4-bit settings.
        path: load this folder instead of the profile's model (e.g. a merged SFT model).
        num_labels: load a sequence-classification head with this many outputs
            (reward and value models) instead of the causal LM head.
        for_training: prepare a 4-bit model for k-bit training (casts norms, enables
            input gradients, gradient checkpointing as the profile says).

    Returns:
        A ``transformers`` model on the profile's device (this process's GPU under a launcher).

    Raises:
        ConfigError: a folder without safetensors weights or with code the profile does not trust,
            or a hub model without safetensors weights.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from .preflight import resolved_precision

    source = path or resolve_model_path(profile.model.name)
    if Path(source).is_dir():
        require_safetensors(source)
        refuse_remote_code(source, profile.model.trust_remote_code)
    device = process_device(detect_device(profile.device))
    if device == "cpu":
        _hide_per_model_bars()
    quant = quantization_config(profile)
    precision = resolved_precision(profile)  # "auto" dtypes chosen for this machine's GPU
    kwargs: dict[str, Any] = dict(
        dtype=_torch_dtype(precision["compute_dtype"] if quant else precision["dtype"]),
        use_safetensors=True,
        trust_remote_code=profile.model.trust_remote_code,
    )
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
    if num_labels is None:
        model = _from_pretrained(AutoModelForCausalLM, source, **kwargs)
    else:
        # A new head on a causal LM: transformers reports score.weight as missing, which is the point.
        with _quiet_load_report():
            model = _from_pretrained(AutoModelForSequenceClassification, source, num_labels=num_labels, **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = model.config.eos_token_id
    if quant is None:
        model.to(device)
    elif for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=profile.training.gradient_checkpointing
        )
        _keep_4bit_weights_differentiable(model)
    if profile.training.gradient_checkpointing and for_training and quant is None:
        model.activation_checkpointing_enable()
    return model


def _from_pretrained(auto_class, source: str, **kwargs):
    """``auto_class.from_pretrained``, with transformers' answer to a hub model without safetensors
    ("do not set use_safetensors=True", the opposite of the kit's rule) turned into the kit's."""
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as err:
        if "safetensors" not in str(err):
            raise
        raise ConfigError(
            f"{source} has no safetensors weights; the kit loads safetensors only, because loading a pickle "
            "checkpoint can run any code it carries. Pick a model or revision that ships model.safetensors, or "
            "convert it once, where you trust it: python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{source}').save_pretrained('converted')\", then name the folder 'converted'",
            key="model.name",
        ) from None


@functools.cache  # a process-wide setting: once is enough
def _hide_per_model_bars() -> None:
    """Turn off the bars transformers and datasets draw for every model loaded or saved and every small
    dataset tokenized ("Loading weights", "Writing model shards", "Tokenizing train dataset"). On a CPU
    profile each takes about a second and a notebook draws dozens: noise a learner cannot act on. Download
    bars stay, and GPU profiles keep them all (loading a large model takes long enough to want one)."""
    import datasets
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    downloads_shown = not hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # also turns off the hub's download bars...
    datasets.disable_progress_bars()
    if downloads_shown:
        hub_utils.enable_progress_bars()  # ...which stay


@contextmanager
def _quiet_load_report():
    """Hold back transformers' load report (its warnings) while a fresh head is attached."""
    import logging

    log = logging.getLogger("transformers.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def lora_config(profile: Profile, task_type: str = "CAUSAL_LM"):
    """The peft ``LoraConfig`` of the profile (rank, alpha, dropout, target modules).

    Args:
        profile: the profile's ``lora`` section is used.
        task_type: ``CAUSAL_LM`` for policies, ``SEQ_CLS`` for reward and value models
            (which also keeps the new score head trainable).
    """
    from peft import LoraConfig

    lora = profile.lora
    targets: str | list[str] = lora.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type=task_type)


def add_lora(model, profile: Profile, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with a fresh LoRA adapter shaped by the profile."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(profile, task_type))


def tokenizer_fingerprint(tok) -> str:
    """A short hash of the vocabulary, special tokens and chat template.

    Two stages of one run must share it: a reward model scoring text tokenized by
    another vocabulary, or a template with other markers, gives silent nonsense.
    """
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False).encode())
    h.update(json.dumps(tok.special_tokens_map, sort_keys=True, default=str).encode())
    h.update((tok.chat_template or "").encode())
    return h.hexdigest()[:16]


def check_same_tokenizer(fingerprints: dict[str, str]) -> None:
    """Fail early unless every named stage uses one tokenizer and chat template.

    Args:
        fingerprints: stage (or artifact) name -> :func:`tokenizer_fingerprint`.

    Raises:
        ConfigError: naming the stages whose tokenizers differ.
    """
    distinct = sorted(set(fingerprints.values()))
    if len(distinct) <= 1:
        return
    groups = {fp: sorted(name for name, f in fingerprints.items() if f == fp) for fp in distinct}
    detail = "; ".join(f"{', '.join(names)} use tokenizer {fp}" for fp, names in groups.items())
    raise ConfigError(
        f"stages of one run must share one tokenizer and chat template, but {detail}. "
        "Re-run the later stages from the same base model, or start a new run directory."
    )


def qlora_memory_report(profile: Profile, path: str | None = None) -> dict[str, float]:
    """Measure what 4-bit loading and LoRA save, on the profile's own model.

    Loads the model twice (full precision, then NF4 with double quantization) and reads
    ``get_memory_footprint``; training memory is estimated for AdamW (weights, gradients
    and two fp32 moments: 16 bytes per trained parameter) for full fine-tuning versus LoRA.
    Introduced in ``02_sft``.

    Returns:
        Megabytes: ``weights_full_mb``, ``weights_4bit_mb``, and the estimated
        ``full_finetune_train_mb`` and ``qlora_train_mb``; plus parameter counts.
    """
    from dataclasses import replace

    full_profile = replace(profile, quantization=replace(profile.quantization, load_in_4bit=False))
    # The 4-bit recipe trains adapters only: a profile that trains its reward model whole (tiny-cpu) gets LoRA there too.
    four_bit = replace(profile, quantization=replace(profile.quantization, load_in_4bit=True),
                       lora=replace(profile.lora, enabled=True, reward=True))
    full = load_model(full_profile, path, for_training=False)
    params = sum(p.numel() for p in full.parameters())
    full_bytes = full.get_memory_footprint()
    del full
    quant = load_model(four_bit, path, for_training=False)
    quant_bytes = quant.get_memory_footprint()
    trainable = sum(p.numel() for n, p in add_lora(quant, profile).named_parameters() if "lora_" in n)
    mb = 2**20
    return {
        "parameters": params,
        "lora_parameters": trainable,
        "weights_full_mb": full_bytes / mb,
        "weights_4bit_mb": quant_bytes / mb,
        "full_finetune_train_mb": (full_bytes + 12 * params) / mb,
        "qlora_train_mb": (quant_bytes + 16 * trainable) / mb,
    }
