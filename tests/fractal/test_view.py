"""Score view HTML: escaping, colour monotone in score, scores and labels in tooltips."""

from __future__ import annotations

import math
import re

import pytest

from adaptlab.errors import DataError
from adaptlab.fractal.view import UNSCORED_BACKGROUND, score_background, scored_response_html, scored_responses_html


def _hues(fragment: str) -> list[float]:
    return [float(h) for h in re.findall(r"background: hsl\(([\d.]+),", fragment)]


def test_sentences_are_escaped():
    out = scored_response_html(['Hi <script>alert("x")</script>.', "A & B."], [0.2, 0.9], title="<b>id</b>")
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out
    assert "A &amp; B." in out and "&lt;b&gt;id&lt;/b&gt;" in out


def test_colour_monotone_in_score():
    scores = [0.0, 0.1, 0.35, 0.5, 0.8, 1.0]
    hues = _hues(scored_response_html([f"s{i}." for i in range(len(scores))], scores))
    assert hues == sorted(hues) and len(set(hues)) == len(hues)
    assert hues[0] == 0 and hues[-1] == 120  # red for the lowest score, green for the highest
    assert score_background(-0.5) == score_background(0.0) and score_background(2.0) == score_background(1.0)
    assert score_background(math.nan) == UNSCORED_BACKGROUND == score_background(None)


def test_tooltips_hold_score_and_label():
    out = scored_response_html(["Good.", "Bad.", "Unknown."], [0.91234, 0.05, 0.5], labels=[1, 0, None])
    titles = re.findall(r'title="([^"]*)"', out)
    assert titles == ["score 0.912; gold 1", "score 0.050; gold 0", "score 0.500"]
    assert 'title="score n/a"' in scored_response_html(["x"], [math.nan])


def test_length_mismatch_raises():
    with pytest.raises(DataError, match="2 sentences but 1 scores"):
        scored_response_html(["a", "b"], [0.1])
    with pytest.raises(DataError, match="1 sentences but 2 labels"):
        scored_response_html(["a"], [0.1], labels=[0, 1])


def test_scored_responses_limit_context_and_missing_keys():
    items = [{"id": f"bag{i}", "context": "Q: <why>?" if i == 0 else None, "sentences": ["S."], "scores": [0.5]}
             for i in range(5)]
    out = scored_responses_html(items, limit=3)
    assert "Showing 3 of 5 responses" in out
    assert "bag2" in out and "bag3" not in out
    assert "Q: &lt;why&gt;?" in out and out.count("<details>") == 1
    with pytest.raises(DataError, match="'bad' has no scores"):
        scored_responses_html([{"id": "bad", "sentences": ["S."]}])
