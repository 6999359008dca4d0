"""The per-token log-probabilities TRL's trainers ask for, computed fast on CPU.

TRL 1.16 patches every policy with a *fused* LM head: ``model(..., labels=..., fused_lm_head=True)``
returns per-token log-probabilities (and entropy, top-1 hits) computed tile by tile, so the
``(batch, seq, vocab)`` logits never exist at once. On a GPU that saves memory. On a CPU,
without Triton, the tiles run as many small torch operations over every position, prompt and
padding included, and the tiny models of ``tiny-cpu`` spend most of a training step there.

:func:`use_full_logits_on_cpu` replaces that head, on CPU only, by the plain computation: full
logits, one ``log_softmax``, a gather. It returns the same fields, so the trainers' losses and
metrics are unchanged (``tests/test_stages.py`` checks the loss against TRL's head); SFT steps
get about 1.7 times faster. Introduced in ``02_sft``.
"""
from __future__ import annotations

import types


def use_full_logits_on_cpu(model, temperature: float = 1.0) -> bool:
    """On CPU, swap the fused LM head TRL put on ``model`` for the full-logits computation.

    Args:
        model: the trainer's model (a ``PeftModel`` or a plain causal LM) after TRL patched it.
        temperature: the temperature TRL's head divides the logits by (1.0 for SFT and DPO;
            the sampling temperature for RLOO and GRPO).

    Returns:
        True when the head was swapped (a CPU model TRL had patched), False otherwise.
    """
    import inspect

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    fused = base.forward
    if base.device.type != "cpu" or "fused_lm_head" not in inspect.signature(fused, follow_wrapped=False).parameters:
        return False

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            return fused(*args, labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        logits = fused(*args, **kwargs).logits  # (batch, seq, vocab)
        if shift_labels is None:
            logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        else:
            labels = shift_labels
        logits = logits.float() if temperature == 1.0 else logits.float() / temperature
        mask = labels != -100  # (batch, seq - 1)
        log_softmax = logits.log_softmax(-1)  # (batch, seq - 1, vocab)
        log_probs = log_softmax.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        with torch.no_grad():  # the trainers log these; none trains on them
            entropy = -torch.einsum("btv,btv->bt", log_softmax.exp(), log_softmax) * mask
            is_top1 = (logits.argmax(-1) == labels) & mask
            log_sum_sq_probs = torch.logsumexp(2 * log_softmax, -1) * mask
            mean_logits = logits.mean(-1) * mask
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy,
                                   log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits, is_top1=is_top1,
                                   label_mask=mask)

    base.forward = types.MethodType(forward, base)
    return True
