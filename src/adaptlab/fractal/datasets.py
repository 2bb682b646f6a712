"""Loaders that turn the FRACTAL evaluation datasets into bags (see ``bags.py``).

**MultiSpanQA** (``<root>/MultiSpanQA_data/<split>.json``, tokens with B/I/O answer tags). The
context is ``" ".join(tokens)``, split into sentences; each token keeps its character span. A
sentence is positive (1) when any token overlapping *its own* character span is tagged B or I;
the bag label is the MAX of its sentence labels (the question is the bag's context, the question
id its group). The reference code labels every sentence from the context's *first* tokens (islice
restarting on a list); we do not. All contexts hold an answer, so, as in the paper, negative bags
are made by cropping a context to its longest run of consecutive non-answer sentences. Unlike the
reference code the crop never starts at the answer sentence before the run, and every crop is
checked to hold no answer token. By default (construction ``paired``) negatives are drawn for
``round(negative_fraction * n)`` distinct contexts (seeded); id ``<id>:neg``, same group as the
positive bag, so grouped folds keep them together. Other constructions (one bag per question,
MIN or AVG bag labels) are in :mod:`adaptlab.fractal.constructions`.

**QA-Feedback** (``<root>/dev_feedback.json``). Only ``prediction 1`` has fine-grained feedback.
Its sentences get label 0 where they overlap an ``Irrelevant`` span (character offsets, end
exclusive) and 1 otherwise; other error types are ignored, as in the paper. Bag label
(``bag_rule``): ``"min"`` (default) = 1 iff the response has no irrelevant sentence, a MIL MIN
bag; ``"mean"`` = the fraction of relevant sentences, which is what the paper evaluates with.
The six ``preference`` entries compare predictions (1,2),(1,3),(1,4),(2,3),(2,4),(3,4): upstream
1 = first preferred -> 1.0, 2 = second -> 0.0, 0 = no preference -> 0.5. The context of every
bag is the question followed by its passages (title line, then the passage text).

Nothing is skipped silently: :class:`LoadStats` counts kept records and dropped ones by reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from adaptlab.errors import DataError
from adaptlab.fractal.bags import Bag, PairBag, Response, overlaps_any, response_from_text
from adaptlab.fractal.constructions import LabelledContext, build_bags

ANSWER_TAGS = {"B", "I"}
IRRELEVANT = "Irrelevant"
PREFERENCE_VALUE = {1: 1.0, 2: 0.0, 0: 0.5}


@dataclass
class LoadStats:
    """Counts of what a loader kept and what it dropped (by reason)."""

    records: int = 0
    bags: int = 0
    positive_bags: int = 0
    negative_bags: int = 0
    sentences: int = 0
    positive_sentences: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add_bag(self, bag: Bag) -> None:
        self.bags += 1
        self.positive_bags += bag.label >= 0.5
        self.negative_bags += bag.label < 0.5
        self.sentences += len(bag.sentences)
        self.positive_sentences += sum(v >= 0.5 for v in bag.sentence_labels or [])

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in vars(self).items() if k != "dropped"}, "dropped": dict(self.dropped)}


@dataclass
class LoadedBags:
    bags: list[Bag]
    pairs: list[PairBag]
    stats: LoadStats


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError("file not found; check the dataset root (see its README for the expected layout)", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg})", path, exc.lineno) from None


# ----------------------------------------------------------------------------------------------- MultiSpanQA


def token_offsets(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """``" ".join(tokens)`` and the character span of each token in it."""
    offsets, cursor = [], 0
    for token in tokens:
        offsets.append((cursor, cursor + len(token)))
        cursor += len(token) + 1
    return " ".join(tokens), offsets


def multispanqa_bag(item: dict[str, Any]) -> tuple[Bag, list[tuple[int, int]]]:
    """One context as a bag (sentence label = 1 iff one of its own tokens is tagged B/I; bag = MAX) and the
    character spans of its answer tokens."""
    tokens, tags = item["context"], item["label"]
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} context tokens but {len(tags)} labels")
    unknown = set(tags) - ANSWER_TAGS - {"O"}
    if unknown:
        raise ValueError(f"unknown tag(s) {sorted(unknown)}; expected B, I or O")
    text, offsets = token_offsets(tokens)
    answer_spans = [span for span, tag in zip(offsets, tags) if tag in ANSWER_TAGS]
    response = response_from_text(text)
    labels = [float(overlaps_any(s, e, answer_spans)) for s, e in response.offsets]
    return Bag(id=item["id"], context=" ".join(item["question"]), sentences=response.sentences,
               offsets=response.offsets, label=max(labels, default=0.0), sentence_labels=labels,
               group=item["id"], response=text), answer_spans


def read_multispanqa_contexts(root: str | Path, split: str = "valid", limit: int | None = None
                              ) -> tuple[list[LabelledContext], LoadStats]:
    """Every labelled context of ``<root>/MultiSpanQA_data/<split>.json`` as a full-context bag with its answer
    spans (the input of :mod:`adaptlab.fractal.constructions`), and the counts of what was dropped."""
    path = Path(root) / "MultiSpanQA_data" / f"{split}.json"
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError('expected {"version": ..., "data": [...]} as in MultiSpanQA_data/*.json', path)
    items = data["data"][:limit]
    stats = LoadStats(records=len(items))
    contexts: list[LabelledContext] = []
    for index, item in enumerate(items):
        if "label" not in item:
            stats.dropped["no answer labels (unlabelled split)"] += 1
            continue
        try:
            bag, answer_spans = multispanqa_bag(item)
        except (KeyError, ValueError) as exc:
            raise DataError(f"item {index} (id {item.get('id')!r}): {exc}", path) from None
        if not bag.sentences:
            stats.dropped["empty context"] += 1
            continue
        contexts.append((bag, answer_spans))
    return contexts, stats


def load_multispanqa(root: str | Path, split: str = "valid", limit: int | None = None,
                     negative_fraction: float = 0.5, seed: int = 0, construction: str = "paired") -> LoadedBags:
    """Bags of ``<root>/MultiSpanQA_data/<split>.json`` by ``construction`` (default: positives plus cropped
    negatives, see module doc; others in :mod:`adaptlab.fractal.constructions`)."""
    contexts, stats = read_multispanqa_contexts(root, split, limit)
    bags, dropped = build_bags(contexts, construction, seed, negative_fraction)
    stats.dropped.update(dropped)
    for bag in bags:
        stats.add_bag(bag)
    return LoadedBags(bags, [], stats)


# ----------------------------------------------------------------------------------------------- QA-Feedback


def _passages_text(question: str, passages: list[list[str]]) -> str:
    blocks = [question] + [f"{p[0]}\n{' '.join(p[1:])}" for p in passages if p]
    return "\n\n".join(blocks)


def feedback_bag(item: dict[str, Any], item_id: str, context: str, bag_rule: Literal["min", "mean"],
                 response: Response) -> Bag | None:
    """``prediction 1`` (already split: ``response``) as a bag: a sentence is 0 iff it overlaps an Irrelevant span;
    None if it has no sentences."""
    text = item["prediction 1"]
    spans = [(e["start"], e["end"]) for e in item["feedback"]["errors"] if e["error type"] == IRRELEVANT]
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            raise ValueError(f"Irrelevant span [{start}, {end}) lies outside 'prediction 1' (length {len(text)})")
    if not response.sentences:
        return None
    labels = [0.0 if overlaps_any(s, e, spans) else 1.0 for s, e in response.offsets]
    label = min(labels) if bag_rule == "min" else sum(labels) / len(labels)
    return Bag(id=f"{item_id}:p1", context=context, sentences=response.sentences, offsets=response.offsets,
               label=label, sentence_labels=labels, group=item_id, response=text)


def load_qa_feedback(root: str | Path, limit: int | None = None,
                     bag_rule: Literal["min", "mean"] = "min") -> LoadedBags:
    """Labelled ``prediction 1`` bags and the six preference pairs per question (see module doc)."""
    if bag_rule not in ("min", "mean"):
        raise DataError(f"bag_rule must be 'min' or 'mean', got {bag_rule!r}")
    path = Path(root) / "dev_feedback.json"
    items = _read_json(path)
    if not isinstance(items, list):
        raise DataError("expected a JSON list of examples as in FineGrainedRLHF's dev_feedback.json", path)
    items = items[:limit]
    stats = LoadStats(records=len(items))
    bags: list[Bag] = []
    pairs: list[PairBag] = []
    for index, item in enumerate(items):
        item_id = f"qa_feedback-{index}"
        try:
            context = _passages_text(item["question"], item["passages"])
            responses = [response_from_text(item[f"prediction {k}"]) for k in range(1, 5)]
            bag = feedback_bag(item, item_id, context, bag_rule, responses[0])
            item_pairs = feedback_pairs(item, item_id, context, responses)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"item {index}: {exc}; expected the FineGrainedRLHF dev_feedback format", path) from None
        if bag is None:
            stats.dropped["prediction 1 has no sentences"] += 1
        else:
            bags.append(bag)
            stats.add_bag(bag)
        if None in item_pairs:
            stats.dropped["pair with an empty prediction"] += item_pairs.count(None)
        pairs.extend(p for p in item_pairs if p is not None)
    stats.pairs = len(pairs)
    return LoadedBags(bags, pairs, stats)


def feedback_pairs(item: dict[str, Any], item_id: str, context: str,
                   responses: list[Response]) -> list[PairBag | None]:
    """The six preference pairs of one question (``responses``: predictions 1-4, split), in upstream order;
    None where a side has no sentences."""
    order = list(combinations(range(4), 2))
    if len(item["preference"]) != len(order):
        raise ValueError(f"{len(item['preference'])} preferences, expected {len(order)}")
    pairs: list[PairBag | None] = []
    for (i, j), raw in zip(order, item["preference"]):
        if type(raw) is not int or raw not in PREFERENCE_VALUE:
            raise ValueError(f"preference {raw!r} for predictions {i + 1} and {j + 1}; expected 0, 1 or 2")
        a, b = responses[i], responses[j]
        pairs.append(PairBag(id=f"{item_id}:p{i + 1}-p{j + 1}", context=context, a=a, b=b,
                             preference=PREFERENCE_VALUE[raw], group=item_id) if a.sentences and b.sentences else None)
    return pairs
