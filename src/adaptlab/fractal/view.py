"""HTML views of responses with each sentence coloured by its FRACTAL score, for ``report.html``.

Why: a table of AUCs says how good a scorer is; reading responses with their low-scoring
sentences highlighted says *what* it learned and where it fails. Each sentence gets a background
on a red-to-green scale (inline ``background: hsl(hue, 75%, 82%)``)::

    hue = 120 * clip(score, 0, 1)      0 = red (low score), 60 = yellow, 120 = green (high score)

and a tooltip (``title`` attribute) with the exact score and, where known, the gold label. A
sentence without a score (NaN) is grey. The markup uses inline styles only, so it needs no CSS
from the page it is embedded in, and no JavaScript; every piece of text is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from adaptlab.errors import DataError

UNSCORED_BACKGROUND = "#e0e0e0"


def score_background(score: float | None) -> str:
    """The CSS background for a score: ``hsl(120*score, 75%, 82%)``, grey when there is no score."""
    if score is None or math.isnan(score):
        return UNSCORED_BACKGROUND
    hue = 120.0 * min(1.0, max(0.0, float(score)))
    return f"hsl({hue:.0f}, 75%, 82%)"


def _tooltip(score: float | None, label: Any) -> str:
    text = "score n/a" if score is None or math.isnan(score) else f"score {float(score):.3f}"
    if label is not None and not (isinstance(label, float) and math.isnan(label)):
        text += f"; gold {label:g}" if isinstance(label, int | float) else f"; gold {label}"
    return text


def scored_response_html(sentences: Sequence[str], scores: Sequence[float | None],
                         labels: Sequence[Any] | None = None, title: str = "") -> str:
    """One response as a ``<div>``: an optional title, then its sentences, each coloured by score.

    ``labels`` (gold sentence labels, ``None``/NaN where unknown) go into the tooltips. Raises
    :class:`DataError` when ``scores`` or ``labels`` do not have one entry per sentence.
    """
    if len(scores) != len(sentences):
        raise DataError(f"{title or 'response'}: {len(sentences)} sentences but {len(scores)} scores")
    if labels is not None and len(labels) != len(sentences):
        raise DataError(f"{title or 'response'}: {len(sentences)} sentences but {len(labels)} labels")
    parts = ['<div style="margin: .8rem 0; padding: .5rem; border: 1px solid #ddd; border-radius: 4px;">']
    if title:
        parts.append(f'<div style="font-weight: 600; margin-bottom: .3rem;">{html.escape(title)}</div>')
    spans = []
    for index, (sentence, score) in enumerate(zip(sentences, scores)):
        label = labels[index] if labels is not None else None
        spans.append(f'<span style="background: {score_background(score)}; padding: 1px 2px;" '
                     f'title="{html.escape(_tooltip(score, label))}">{html.escape(sentence)}</span>')
    parts.append('<div style="line-height: 1.8;">' + " ".join(spans) + "</div></div>")
    return "".join(parts)


def _legend() -> str:
    swatches = " ".join(f'<span style="background: {score_background(s)}; padding: 1px 6px;">{s:.2f}</span>'
                        for s in (0.0, 0.25, 0.5, 0.75, 1.0))
    return (f'<div style="font-size: .9rem; color: #555;">Sentence score (hover a sentence for its score and '
            f'gold label): {swatches}</div>')


def scored_responses_html(items: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    """Several responses (the first ``limit`` of ``items``) as one HTML string with a legend.

    Each item is a mapping with ``id``, ``sentences``, ``scores`` and optionally ``context``
    (shown folded in a ``<details>`` element) and ``labels``. The string says how many of how many
    items are shown, so a cut list is never mistaken for the whole data.
    """
    shown = items[:max(0, limit)]
    parts = [_legend(), f'<div style="font-size: .9rem; color: #555;">Showing {len(shown)} of {len(items)} '
                        "responses.</div>"]
    for position, item in enumerate(shown):
        missing = [key for key in ("id", "sentences", "scores") if key not in item]
        if missing:
            raise DataError(f"score view item {item.get('id', f'#{position}')!r} has no {', '.join(missing)}")
        context = item.get("context")
        if context:
            parts.append(f'<details><summary>context of {html.escape(str(item["id"]))}</summary>'
                         f'<div style="white-space: pre-wrap; color: #444;">{html.escape(context)}</div></details>')
        parts.append(scored_response_html(item["sentences"], item["scores"], item.get("labels"),
                                          title=str(item["id"])))
    return "\n".join(parts)
