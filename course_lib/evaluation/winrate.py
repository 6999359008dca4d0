"""Win rate of one variant over another on the same prompts, with a choice of judge.

A judge is a callable ``judge(record, first, second)`` returning +1 (the first reply is
better), -1 (the second is) or 0 (a tie), or None when it has no verdict (a pair a human
skipped or never labeled). A judge may also offer ``judge_batch(records, firsts,
seconds) -> list`` to judge many pairs in one call (a reward model scores all replies
in one batch); :func:`win_rate` uses it when present.

Judges: :func:`gold_judge` (the domains' rubric), :func:`score_judge` (a pointwise
scorer such as a reward model), :func:`labels_judge` (human labels from the labeling
widget) and :func:`position_biased_judge` (a simulated judge that favours the first slot).
Introduced in ``07_evaluation``.
"""
from __future__ import annotations

import json
import random
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..data import has_reference
from ..domains import gold_preference, preference
from ..errors import DataError
from ..labeling.pairs import response_text
from ..labeling.preferences import majority_choice
from ..stats import bootstrap_ci
from .metrics import response_lengths

Judge = Callable[[Mapping[str, Any], str, str], "int | None"]
"""``judge(record, first, second)``: +1 first better, -1 second better, 0 tie, None no verdict."""

ScoreFn = Callable[[Sequence[Mapping[str, Any]], Sequence[str]], Sequence[float]]
"""``score_fn(records, replies)``: one score per (record, reply), higher is better."""


def gold_judge() -> Judge:
    """The gold judge: the domain rubric's preference (``course_lib.domains.gold_preference``).

    Pointwise, so it never flips with the order. Records need ``domain`` and ``reference``; a
    record without a reference (a user's own prompt, :func:`course_lib.data.has_reference`)
    gets no verdict, so :func:`win_rate` leaves it out and counts it as ``unjudged``.
    """

    def judge(record: Mapping[str, Any], first: str, second: str) -> int | None:
        if not has_reference(record):
            return None
        return gold_preference(record["domain"], record["reference"], first, second)

    return judge


class ScoreJudge:
    """A judge from a pointwise scorer: the reply with the higher score wins.

    Args:
        score_fn: scores replies in one batch, ``score_fn(records, replies) -> list of floats``
            (e.g. a reward model on each prompt with its reply).
        tie_margin: score differences up to this are ties.
    """

    def __init__(self, score_fn: ScoreFn, tie_margin: float = 0.0):
        self.score_fn = score_fn
        self.tie_margin = tie_margin

    def __call__(self, record: Mapping[str, Any], first: str, second: str) -> int:
        return self.judge_batch([record], [first], [second])[0]

    def judge_batch(self, records: Sequence[Mapping[str, Any]], firsts: Sequence[str],
                    seconds: Sequence[str]) -> list[int]:
        """Judge many pairs with one ``score_fn`` call, scoring each distinct (prompt, reply) once."""
        # Judged in both orders every reply appears twice; the dict keeps one (record, reply) per key.
        to_score: dict[tuple[str, str], tuple[Mapping[str, Any], str]] = {}
        for record, reply in zip([*records, *records], [*firsts, *seconds]):
            to_score.setdefault((_prompt_key(record), reply), (record, reply))
        scores = self.score_fn([record for record, _ in to_score.values()], [reply for _, reply in to_score.values()])
        score_of = dict(zip(to_score, (float(s) for s in scores)))
        return [preference(score_of[(_prompt_key(record), first)], score_of[(_prompt_key(record), second)],
                           self.tie_margin)
                for record, first, second in zip(records, firsts, seconds)]


def score_judge(score_fn: ScoreFn, tie_margin: float = 0.0) -> ScoreJudge:
    """A judge from a pointwise scorer such as a reward model (see :class:`ScoreJudge`).

    Args:
        score_fn: ``score_fn(records, replies) -> list of floats``, called once per
            :func:`win_rate` with every distinct reply.
        tie_margin: score differences up to this are ties.
    """
    return ScoreJudge(score_fn, tie_margin)


def labels_judge(pairs: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]],
                 annotators: Sequence[str] | None = None) -> Judge:
    """A judge that looks up human labels from the labeling widget.

    The widget shows a pair's ``response_a`` first (left) and ``response_b`` second, and a
    label's ``choice`` is ``"A"``, ``"B"``, ``"tie"`` or ``"skip"``. A label is found by the
    record's ``id`` and the two reply texts: the pair's prompt id is its ``prompt_id`` field
    if it has one (a prompt shown in both orders needs two pairs, and pair ids are unique),
    else its ``id``. Asked about the pair in the order it was shown, the judge returns the
    label as given; asked in the other order, the label reversed. So a prompt labeled in
    one order can never flip, while one labeled in both orders shows a person's position
    bias. Several annotators' labels on one pair are combined by majority (a split is a
    tie), as :func:`course_lib.labeling.labels_to_preferences` does.

    Args:
        pairs: the labeled pair records ``{"id", "response_a", "response_b", ...}``.
        labels: the labels in force (``LabelStore.labels()``); labels of other pairs are ignored.
        annotators: use only these annotators' labels; all by default.

    Returns:
        A judge returning None for a pair nobody labeled or everyone skipped.
    """
    shown = {pair["id"]: (pair.get("prompt_id", pair["id"]), response_text(pair, "A"), response_text(pair, "B"))
             for pair in pairs}
    choices: dict[tuple[str, str, str], list[str]] = {}
    for label in labels:
        if label["pair_id"] in shown and (annotators is None or label["annotator"] in annotators):
            choices.setdefault(shown[label["pair_id"]], []).append(label["choice"])
    verdict_of = {"A": 1, "B": -1, "tie": 0, "split": 0, "skip": None}
    as_shown = {key: verdict_of[majority_choice(votes)] for key, votes in choices.items()}

    def judge(record: Mapping[str, Any], first: str, second: str) -> int | None:
        if (record["id"], first, second) in as_shown:
            return as_shown[(record["id"], first, second)]
        reversed_verdict = as_shown.get((record["id"], second, first))
        return None if reversed_verdict is None else -reversed_verdict

    return judge


def position_biased_judge(judge: Judge, first_bias: float, seed: int = 0) -> Judge:
    """A simulated judge that, with probability ``first_bias``, prefers whichever reply is first.

    Otherwise it defers to ``judge``. LLM judges show this bias; judged in both orders its
    verdicts disagree on some pairs, which :func:`win_rate` counts as position flips.

    Args:
        judge: the judge it defers to.
        first_bias: probability of answering +1 regardless of the replies.
        seed: seed of the coin.
    """
    rng = random.Random(seed)

    def biased(record: Mapping[str, Any], first: str, second: str) -> int | None:
        return 1 if rng.random() < first_bias else judge(record, first, second)

    return biased


def win_rate(records: Sequence[Mapping[str, Any]], replies_a: Sequence[str], replies_b: Sequence[str], judge: Judge,
             both_orders: bool = True, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Win rate of variant A over variant B on the same prompts, with a bootstrap 95% CI.

    With ``both_orders`` each pair is judged as (A, B) and as (B, A). When the two verdicts
    disagree (the judge's answer depends on which reply came first) the pair is a
    position flip and is scored as a tie. A tie counts as half a win. Prompts the judge
    gives no verdict on (None, in either order) are left out and counted as ``unjudged``.

    Args:
        records: the prompt records (``id``, ``domain``, ``reference``, ``prompt``), one per prompt.
        replies_a: variant A's reply to each prompt.
        replies_b: variant B's reply to each prompt.
        judge: see the module docstring.
        both_orders: judge each pair in both orders (measures and neutralises position bias).
        n_resamples: bootstrap resamples of the prompts.
        seed: seed of the bootstrap.

    Returns:
        ``{"win_rate", "ci_low", "ci_high", "wins", "ties", "losses", "flips", "flip_rate",
        "n_judged", "unjudged", "outcomes"}``: ``ties`` includes the flips; ``flip_rate`` is
        flips over judged prompts (``flips`` and ``flip_rate`` are None when only one order
        was judged); ``outcomes`` is +1/0/-1 per prompt from A's side, None if unjudged.

    Raises:
        DataError: when the judge gave no verdict on any prompt (none has a reference, for the gold judge).
    """
    n = len(records)
    if not n == len(replies_a) == len(replies_b):
        raise ValueError(f"need one reply per record from each variant: {n} records, "
                         f"{len(replies_a)} and {len(replies_b)} replies")
    if both_orders:
        verdicts = _judge_all(judge, [*records, *records], [*replies_a, *replies_b], [*replies_b, *replies_a])
        # (B, A) verdicts negated are from A's side; a pair whose two sides disagree flipped.
        pairs = [(ab, None if ba is None else -ba) for ab, ba in zip(verdicts[:n], verdicts[n:])]
        outcomes = [None if None in pair else pair[0] if pair[0] == pair[1] else 0 for pair in pairs]
        flips = sum(None not in pair and pair[0] != pair[1] for pair in pairs)
    else:
        outcomes = _judge_all(judge, records, replies_a, replies_b)
        flips = None
    judged = np.array([o for o in outcomes if o is not None], dtype=float)  # (n_judged,)
    if judged.size == 0:
        raise DataError(f"the judge gave no verdict on any of the {n} prompts; the gold judge needs records with a "
                        "reference, a labels judge needs labels of these replies")
    estimate, low, high = bootstrap_ci((judged + 1) / 2, n_resamples=n_resamples, seed=seed)  # win 1, tie 0.5, loss 0
    return {
        "win_rate": estimate,
        "ci_low": low,
        "ci_high": high,
        "wins": int(np.sum(judged == 1)),
        "ties": int(np.sum(judged == 0)),
        "losses": int(np.sum(judged == -1)),
        "flips": flips,
        "flip_rate": None if flips is None else flips / judged.size,
        "n_judged": int(judged.size),
        "unjudged": n - int(judged.size),
        "outcomes": [None if o is None else int(o) for o in outcomes],
    }


def length_controlled_win_rate(records: Sequence[Mapping[str, Any]], replies_a: Sequence[str],
                               replies_b: Sequence[str], judge: Judge, both_orders: bool = True,
                               n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Win rate of A over B had both replied at the same length, from a logistic fit.

    Judges (people, LLMs, reward models) tend to favour longer replies, so a variant can win
    by padding. Each prompt's outcome from :func:`win_rate` (win 1, tie 0.5, loss 0: ties
    are split, as in the raw win rate) is regressed on the word-count difference
    ``len(A) - len(B)`` divided by its standard deviation, not centred, so that 0 still means
    equal length: ``logit P(A wins) = intercept + length_coef * diff``. The length-controlled
    win rate is ``sigmoid(intercept)``, with a 95% CI from the intercept's. The fit is
    statsmodels' ``Logit`` (a fractional logit because of the 0.5s) with robust (HC0)
    standard errors, which that needs.

    Args:
        records: the prompt records, one per prompt.
        replies_a: variant A's reply to each prompt.
        replies_b: variant B's reply to each prompt.
        judge: see the module docstring.
        both_orders: judge each pair in both orders (as for :func:`win_rate`).
        n_resamples: bootstrap resamples of the raw win rate's CI.
        seed: seed of the bootstrap.

    Returns:
        ``{"length_controlled_win_rate", "ci_low", "ci_high", "raw_win_rate", "raw_ci_low",
        "raw_ci_high", "length_coef", "length_coef_pvalue", "length_diff_std_words",
        "mean_length_diff_words", "n_judged", "note"}``; ``length_coef`` is the change in
        log-odds of an A win per standard deviation of length difference (positive: longer
        wins). When length cannot be separated from the variants (the same length difference
        on every prompt) or the fit does not converge (length alone decides every pair, or one
        variant wins them all), the fitted fields are None and ``note`` says why; otherwise
        ``note`` is None.
    """
    import statsmodels.api as sm
    from scipy.special import expit
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    raw = win_rate(records, replies_a, replies_b, judge, both_orders=both_orders, n_resamples=n_resamples, seed=seed)
    judged = [i for i, verdict in enumerate(raw["outcomes"]) if verdict is not None]
    points = (np.array([raw["outcomes"][i] for i in judged], dtype=float) + 1) / 2  # (n_judged,) in {0, 0.5, 1}
    length_diff = np.array(response_lengths(replies_a)["lengths"]) - np.array(response_lengths(replies_b)["lengths"])
    length_diff = length_diff[judged].astype(float)  # (n_judged,)
    diff_std = float(length_diff.std())
    out = {"length_controlled_win_rate": None, "ci_low": None, "ci_high": None, "raw_win_rate": raw["win_rate"],
           "raw_ci_low": raw["ci_low"], "raw_ci_high": raw["ci_high"], "length_coef": None, "length_coef_pvalue": None,
           "length_diff_std_words": diff_std, "mean_length_diff_words": float(length_diff.mean()) if judged else None,
           "n_judged": raw["n_judged"], "note": None}
    if diff_std == 0:
        out["note"] = "the length difference is the same on every prompt: its effect cannot be separated from the variants'"
        return out
    design = sm.add_constant(length_diff / diff_std)  # (n_judged, 2): intercept, standardised difference
    with warnings.catch_warnings():
        # Non-convergence is reported in the result's note, which says it more plainly.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        fit = sm.Logit(points, design).fit(disp=0, cov_type="HC0")
    if not fit.mle_retvals["converged"]:
        out["note"] = "the logistic fit did not converge: length alone separates wins from losses, or one variant wins every pair"
        return out
    (intercept_low, intercept_high), _ = fit.conf_int()
    out.update(length_controlled_win_rate=float(expit(fit.params[0])), ci_low=float(expit(intercept_low)),
               ci_high=float(expit(intercept_high)), length_coef=float(fit.params[1]),
               length_coef_pvalue=float(fit.pvalues[1]))
    return out


def _judge_all(judge: Judge, records: Sequence[Mapping[str, Any]], firsts: Sequence[str],
               seconds: Sequence[str]) -> list[int | None]:
    """Every pair's verdict, in one batch call when the judge offers one."""
    if hasattr(judge, "judge_batch"):
        return list(judge.judge_batch(records, firsts, seconds))
    return [judge(record, first, second) for record, first, second in zip(records, firsts, seconds)]


def _prompt_key(record: Mapping[str, Any]) -> str:
    """What identifies a record's prompt for scoring: its messages (ids may be missing or reused)."""
    return json.dumps(record["prompt"], sort_keys=True)
