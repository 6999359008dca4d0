"""The labeling widget: a prompt, two responses side by side, and A / B / tie / skip.

Every click is written to the :class:`~course_lib.labeling.store.LabelStore` (flushed and
fsynced) before the next pair is shown, so closing the tab, restarting or killing the
kernel loses nothing already clicked; reopening resumes at the first pair this annotator
has not labeled. Keyboard: click into the "Keys" box, then press ``a``, ``b``, ``t``,
``s`` (choices) or ``u`` (undo). Introduced in ``03_reward_model``; the notebook
``notebooks/labeling/label_preferences.ipynb`` is its workshop front end.
"""
from __future__ import annotations

import html
import re
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from .pairs import response_text
from .store import LabelStore

BUTTONS = {  # choice: (label, tooltip, ipywidgets button style)
    "A": ("A is better", "Response A is better (key: a)", "info"),
    "B": ("B is better", "Response B is better (key: b)", "info"),
    "tie": ("Tie", "Both are equally good or equally bad (key: t)", ""),
    "skip": ("Skip", "Cannot judge this pair; skip it (key: s)", ""),
}
KEYS = {"a": "A", "b": "B", "t": "tie", "s": "skip"}
UNDO_KEY = "u"

_FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_STYLE = HtmlFormatter(noclasses=True, style="default")
_TEXT_STYLE = "white-space: pre-wrap; font-family: var(--jp-content-font-family, sans-serif); margin: 0"


def _code_html(code: str, language: str) -> str:
    try:
        lexer = get_lexer_by_name(language) if language else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    return highlight(code, lexer, _CODE_STYLE)


def render_message(text: str, domain: str = "") -> str:
    """HTML for one message: fenced code blocks highlighted as code, the rest as escaped text.

    A ``code``-domain response without fences is shown entirely as Python code.

    Args:
        text: the message content (model output: always escaped, never trusted as HTML).
        domain: the pair's domain.
    """
    if domain == "code" and "```" not in text:
        return _code_html(text, "python") if text.strip() else ""
    parts, position = [], 0
    for match in _FENCE.finditer(text):
        parts.append(f'<p style="{_TEXT_STYLE}">{html.escape(text[position:match.start()])}</p>')
        parts.append(_code_html(match.group(2), match.group(1)))
        position = match.end()
    parts.append(f'<p style="{_TEXT_STYLE}">{html.escape(text[position:])}</p>')
    return "".join(parts)


class LabelingWidget(widgets.VBox):
    """Label preference pairs inside a notebook; every label goes straight to the store.

    Args:
        pairs: pair records ``{"id", "domain", "reference", "prompt", "response_a", "response_b"}``.
        store: where labels are appended.
        annotator: the labeler's id (editable in the widget; changing it resumes that
            annotator's own progress).

    Example:
        >>> LabelingWidget(pairs, LabelStore(run_dir / "labels" / "labels.jsonl"), "ana")  # doctest: +SKIP
    """

    def __init__(self, pairs: Sequence[Mapping[str, Any]], store: LabelStore, annotator: str = ""):
        self.pairs = list(pairs)
        self.store = store
        self.index: int | None = None

        self.annotator_box = widgets.Text(
            value=annotator, description="Annotator", placeholder="your name or id", continuous_update=False
        )
        self.progress = widgets.IntProgress(min=0, max=max(len(self.pairs), 1), description="Progress")
        self.progress_text = widgets.HTML()
        self.prompt_view = widgets.HTML()
        self.response_views = {side: widgets.HTML(layout=widgets.Layout(width="50%")) for side in ("A", "B")}
        self.rationale = widgets.Textarea(
            placeholder="Why? (optional, saved with your choice)",
            description="Rationale",
            layout=widgets.Layout(width="100%"),
        )
        self.rationale.add_class("labeling-rationale")
        self.choice_buttons = {}
        for choice, (label, tooltip, style) in BUTTONS.items():
            button = widgets.Button(description=label, tooltip=tooltip, button_style=style)
            button.add_class(f"labeling-choice-{choice}")
            button.on_click(lambda _, choice=choice: self.choose(choice))
            self.choice_buttons[choice] = button
        self.undo_button = widgets.Button(
            description="Undo last", tooltip="Withdraw your last label (key: u)", icon="undo"
        )
        self.undo_button.add_class("labeling-undo")
        self.undo_button.on_click(lambda _: self.undo())
        self.key_box = widgets.Text(
            description="Keys",
            placeholder="click here, then press a / b / t / s, or u to undo",
            continuous_update=True,
            layout=widgets.Layout(width="420px"),
        )
        self.key_box.add_class("labeling-keys")
        self.key_box.observe(self._on_key, names="value")
        self.status = widgets.HTML()
        self.status.add_class("labeling-status")
        self.annotator_box.observe(lambda _: self._resume(), names="value")

        super().__init__(
            [
                widgets.HBox([self.annotator_box, self.progress, self.progress_text]),
                self.prompt_view,
                widgets.HBox(list(self.response_views.values())),
                self.rationale,
                widgets.HBox([*self.choice_buttons.values(), self.undo_button]),
                self.key_box,
                self.status,
            ]
        )
        self.add_class("labeling-widget")
        self._resume()
        problems = self.store.read().problems
        if problems:
            lines = ", ".join(str(problem.line) for problem in problems)
            self._say(f"The store had torn line(s) at {lines} (a crash mid-write); they are skipped, "
                      "every complete label is kept.", "warning")

    @property
    def annotator(self) -> str:
        """The current annotator id, stripped."""
        return self.annotator_box.value.strip()

    @property
    def current_pair(self) -> Mapping[str, Any] | None:
        """The pair on screen, or None when this annotator has labeled every pair."""
        return None if self.index is None else self.pairs[self.index]

    def choose(self, choice: str) -> None:
        """Record ``choice`` for the pair on screen, then show the next unlabeled pair."""
        pair = self.current_pair
        if not self.annotator:
            self._say("Enter your annotator id first; labels are saved under it.", "danger")
            return
        if pair is None:
            self._say("Every pair is labeled. Thank you!", "success")
            return
        try:
            self.store.add(pair["id"], self.annotator, choice, self.rationale.value.strip())
        except OSError as err:
            self._say(f"NOT saved ({err}). Your choice was not recorded; try again.", "danger")
            return
        self.rationale.value = ""
        self._show(self._next_unlabeled(after=self.index))
        self._say(f"Saved {choice} for pair {html.escape(pair['id'])}.", "success")

    def undo(self) -> None:
        """Withdraw this annotator's last label and show that pair again, with its rationale."""
        if not self.annotator:
            self._say("Enter your annotator id first.", "danger")
            return
        label = self.store.undo(self.annotator)
        if label is None:
            self._say("Nothing to undo.", "warning")
            return
        ids = [pair["id"] for pair in self.pairs]
        # Rationale first: the frontend applies updates in order, so the pair never shows without it.
        self.rationale.value = label["rationale"]
        self._show(ids.index(label["pair_id"]) if label["pair_id"] in ids else self._next_unlabeled())
        self._say(f"Undid {label['choice']} for pair {html.escape(label['pair_id'])}; label it again.", "warning")

    def press_key(self, key: str) -> None:
        """Act on one shortcut key: a, b, t, s choose; u undoes; others are ignored."""
        key = key.lower()
        if key in KEYS:
            self.choose(KEYS[key])
        elif key == UNDO_KEY:
            self.undo()

    def _on_key(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            return  # the reset below fires this observer again with an empty value
        key = change["new"][-1]
        self.key_box.value = ""
        self.press_key(key)

    def _resume(self) -> None:
        self._show(self._next_unlabeled() if self.annotator else (0 if self.pairs else None))
        self._say("" if self.annotator else "Enter your annotator id to start.", "info")

    def _labeled_ids(self) -> set[str]:
        return {label["pair_id"] for label in self.store.labels(self.annotator)} if self.annotator else set()

    def _next_unlabeled(self, after: int | None = None) -> int | None:
        """First unlabeled pair after ``after`` (wrapping around), or None if all are labeled."""
        done = self._labeled_ids()
        start = 0 if after is None else after + 1
        order = list(range(start, len(self.pairs))) + list(range(start))
        return next((i for i in order if self.pairs[i]["id"] not in done), None)

    def _show(self, index: int | None) -> None:
        self.index = index
        done = len(self._labeled_ids() & {pair["id"] for pair in self.pairs})
        self.progress.value = done
        self.progress_text.value = f"{done} of {len(self.pairs)} labeled"
        pair = self.current_pair
        for button in self.choice_buttons.values():
            button.disabled = pair is None
        if pair is None:
            self.prompt_view.value = "<h3>All pairs labeled.</h3>"
            for view in self.response_views.values():
                view.value = ""
            return
        prompt = "".join(
            f"<div><b>{html.escape(message['role'])}</b>{render_message(message['content'])}</div>"
            for message in pair["prompt"]
        )
        self.prompt_view.value = (
            f"<h4>Pair {html.escape(pair['id'])} &middot; {html.escape(pair['domain'])}</h4>{prompt}"
        )
        for side, view in self.response_views.items():
            body = render_message(response_text(pair, side), pair["domain"])
            view.value = f'<div style="padding: 0 8px"><h4>Response {side}</h4>{body}</div>'

    def _say(self, message: str, level: str) -> None:
        colours = {"info": "inherit", "success": "#2e7d32", "warning": "#b26a00", "danger": "#c62828"}
        self.status.value = f'<span style="color: {colours[level]}">{message}</span>' if message else ""
