"""Simulated annotators: label pairs from the gold judge with controlled noise and bias.

They let papermill runs and tests label without a person, and they make annotator
quality something a learner can dial: a careful annotator, a hurried one that often
answers at random, one that prefers longer answers. Each decision is seeded by
(seed, annotator name, pair id), so a rerun or a resumed run gives the same labels.
A pair without a reference (a user's own data) cannot be judged, so they refuse it: such
pairs are for people to label. Introduced in ``03_reward_model``.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..data import has_reference
from ..domains.judge import GOLD_TIE_MARGIN, preference
from ..errors import DataError
from .pairs import response_text
from .store import LabelStore, timestamp_now

Judge = Callable[[str, Any, str], Any]
"""``judge(domain, reference, response)`` returning a result with a ``.score`` in [0, 1]."""


def default_judge() -> Judge:
    """The kit's gold judge, ``course_lib.domains.gold_score`` (imported only when needed)."""
    from ..domains import gold_score

    return gold_score


class CachedJudge:
    """A judge that remembers its scores, so a panel of annotators scores each response once.

    Args:
        judge: the judge to wrap; defaults to :func:`default_judge`, imported at the first score.
    """

    def __init__(self, judge: Judge | None = None):
        self.judge = judge
        self._scores: dict[tuple[str, str, str], float] = {}

    def score(self, domain: str, reference: Any, response: str) -> float:
        """The judge's score of ``response``, computed once per (domain, reference, response)."""
        key = (domain, reference if isinstance(reference, str) else json.dumps(reference, sort_keys=True), response)
        if key not in self._scores:
            if self.judge is None:
                self.judge = default_judge()
            self._scores[key] = float(self.judge(domain, reference, response).score)
        return self._scores[key]

    def pair_scores(self, pair: Mapping[str, Any]) -> tuple[float, float]:
        """Gold scores of responses A and B of a pair.

        Raises:
            DataError: the pair has no reference to judge against.
        """
        require_references([pair])
        return (
            self.score(pair["domain"], pair["reference"], response_text(pair, "A")),
            self.score(pair["domain"], pair["reference"], response_text(pair, "B")),
        )


def require_references(pairs: Iterable[Mapping[str, Any]], file: str | Path | None = None) -> None:
    """Refuse pairs the gold judge cannot score: those without a reference (a user's own data).

    Args:
        pairs: the pairs a simulated annotator is about to label.
        file: the file they came from, for the message.

    Raises:
        DataError: naming how many pairs have no reference, the first one's id, and what to do instead.
    """
    missing = [pair["id"] for pair in pairs if not has_reference(pair)]
    if missing:
        raise DataError(f"{len(missing)} pair(s) have no reference, the first is {missing[0]!r}: simulated annotators "
                        "label from the gold judge, which needs one; label these pairs yourself with the labeling "
                        "widget (course_lib.labeling.LabelingWidget)", file=file, field="reference")


def as_cached(judge: Judge | CachedJudge | None) -> CachedJudge:
    """Wrap ``judge`` in a :class:`CachedJudge` unless it already is one."""
    return judge if isinstance(judge, CachedJudge) else CachedJudge(judge)


def gold_choice(
    pair: Mapping[str, Any], judge: Judge | CachedJudge | None = None, tie_margin: float = GOLD_TIE_MARGIN
) -> str:
    """What the gold judge prefers: ``"A"``, ``"B"``, or ``"tie"`` when the scores are within ``tie_margin``."""
    return {1: "A", -1: "B", 0: "tie"}[preference(*as_cached(judge).pair_scores(pair), tie_margin)]


@dataclass
class SimulatedAnnotator:
    """An annotator that labels from the gold judge, with noise and biases you set.

    The annotator's margin for A over B is
    ``gold(A) - gold(B) + length_bias * (len(A) - len(B)) / max(len(A), len(B)) + position_bias``;
    within ``tie_margin`` of zero it answers ``tie``, else the side the margin favours.
    Before that, it skips a pair with probability ``skip_rate`` and answers A or B at
    random with probability ``noise``.

    Attributes:
        name: the annotator id written to the store.
        noise: probability of a random A/B answer (0 = always follows the margin).
        length_bias: weight of the relative length difference (> 0 prefers longer answers).
        position_bias: constant added in favour of A (> 0 prefers whatever is shown first).
        tie_margin: margins with absolute value at or below this are answered ``tie``.
        skip_rate: probability of answering ``skip``.
        seed: seed of the annotator's random choices.
        judge: the gold judge (a callable or a shared :class:`CachedJudge`); defaults to
            ``course_lib.domains.gold_score``.
    """

    name: str
    noise: float = 0.0
    length_bias: float = 0.0
    position_bias: float = 0.0
    tie_margin: float = GOLD_TIE_MARGIN
    skip_rate: float = 0.0
    seed: int = 0
    judge: Judge | CachedJudge | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("noise", "skip_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is {value}; expected a probability in [0, 1]")
        if self.tie_margin < 0:
            raise ValueError(f"tie_margin is {self.tie_margin}; expected >= 0")
        if not self.name:
            raise ValueError("name is empty; it is the annotator id written to the store")
        self._judge = as_cached(self.judge)

    def margin(self, pair: Mapping[str, Any]) -> float:
        """This annotator's perceived advantage of A over B (gold margin plus biases)."""
        score_a, score_b = self._judge.pair_scores(pair)
        len_a, len_b = len(response_text(pair, "A")), len(response_text(pair, "B"))
        relative_length = (len_a - len_b) / max(len_a, len_b, 1)
        return score_a - score_b + self.length_bias * relative_length + self.position_bias

    def choose(self, pair: Mapping[str, Any]) -> str:
        """The annotator's answer for one pair: ``"A"``, ``"B"``, ``"tie"`` or ``"skip"``."""
        rng = random.Random(f"{self.seed}:{self.name}:{pair['id']}")
        # Draw every random number up front, so changing one rate leaves the other decisions alone.
        skip_draw, noise_draw, coin = rng.random(), rng.random(), rng.random()
        if skip_draw < self.skip_rate:
            return "skip"
        if noise_draw < self.noise:
            return "A" if coin < 0.5 else "B"
        margin = self.margin(pair)
        if abs(margin) <= self.tie_margin:
            return "tie"
        return "A" if margin > 0 else "B"

    def label(self, pair: Mapping[str, Any]) -> dict[str, Any]:
        """A label record for ``pair``, shaped like the store's records."""
        score_a, score_b = self._judge.pair_scores(pair)
        return {
            "action": "label",
            "pair_id": pair["id"],
            "annotator": self.name,
            "choice": self.choose(pair),
            "rationale": f"simulated: gold {score_a:.2f} vs {score_b:.2f}",
            "timestamp": timestamp_now(),
            "source": "simulated",
        }

    def annotate(self, pairs: list[Mapping[str, Any]], store: LabelStore | None = None) -> list[dict[str, Any]]:
        """Label every pair; with a store, append the labels and resume past those already there.

        Args:
            pairs: pair records.
            store: where to append the labels; pairs this annotator labeled before are kept as they are.

        Returns:
            This annotator's labels of ``pairs``, in pair order.

        Raises:
            DataError: a pair has no reference; nothing is labeled then.
        """
        require_references(pairs)  # before any label reaches the store
        if store is None:
            return [self.label(pair) for pair in pairs]
        done = {label["pair_id"]: label for label in store.labels(self.name)}
        labels = []
        for pair in pairs:
            if pair["id"] not in done:
                new = self.label(pair)
                done[pair["id"]] = store.add(pair["id"], self.name, new["choice"], new["rationale"], source="simulated")
            labels.append(done[pair["id"]])
        return labels


def simulated_panel(judge: Judge | CachedJudge | None = None, seed: int = 0) -> list[SimulatedAnnotator]:
    """Three annotators of different quality sharing one cached judge.

    ``careful`` follows the gold judge with 5% noise, ``hurried`` answers at random 35% of
    the time, and ``length-lover`` is careful but favours the longer answer.

    Args:
        judge: the gold judge; defaults to ``course_lib.domains.gold_score``.
        seed: seed shared by the panel.
    """
    shared = as_cached(judge)
    return [
        SimulatedAnnotator("careful", noise=0.05, seed=seed, judge=shared),
        SimulatedAnnotator("hurried", noise=0.35, skip_rate=0.05, seed=seed, judge=shared),
        SimulatedAnnotator("length-lover", noise=0.05, length_bias=0.5, seed=seed, judge=shared),
    ]
