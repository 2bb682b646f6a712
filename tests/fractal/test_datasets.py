"""MultiSpanQA and QA-Feedback loaders on hand-built upstream-format files, plus real-data invariants."""

from __future__ import annotations

import json

import pytest

from adaptlab.errors import ConfigError, DataError
from adaptlab.fractal.bags import Bag
from adaptlab.fractal.constructions import crop_to_negative, longest_negative_run
from adaptlab.fractal.datasets import load_multispanqa, load_qa_feedback


def sentence(words: str, answer: str | None = None) -> tuple[list[str], list[str]]:
    """Tokens of one sentence and their tags; ``answer`` (a token run) is tagged B I I ..."""
    tokens = words.split()
    tags = ["O"] * len(tokens)
    if answer:
        run = answer.split()
        at = next(i for i in range(len(tokens)) if tokens[i : i + len(run)] == run)
        tags[at : at + len(run)] = ["B"] + ["I"] * (len(run) - 1)
    return tokens, tags


def msqa_item(item_id: str, *sentences: tuple[list[str], list[str]]) -> dict:
    return {"id": item_id, "type": "LOC", "question": ["where", "is", "it"], "num_span": 1,
            "structure": "Conjunction", "context": [t for s in sentences for t in s[0]],
            "label": [t for s in sentences for t in s[1]]}


def write_msqa(root, *items, split="valid"):
    folder = root / "MultiSpanQA_data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.json").write_text(json.dumps({"version": "1.0", "data": list(items)}))
    return root


def test_each_sentence_is_labelled_from_its_own_tokens(tmp_path):
    # "Paris" is in sentence 1 (not an answer) and sentence 3 (the answer). Labelling every sentence from
    # the context's first tokens (the reference code's islice bug) would give [0, 0, 0]; the answer is only in 3.
    late = msqa_item("late", sentence("Paris is big ."), sentence("It rains there often ."),
                     sentence("The capital is Paris .", answer="Paris"))
    # And the mirror case: the answer opens the context, so the bug would mark every sentence positive.
    early = msqa_item("early", sentence("Lyon lies on the Rhone .", answer="Lyon"), sentence("It rains ."),
                      sentence("Lyon is old ."))
    loaded = load_multispanqa(write_msqa(tmp_path, late, early), negative_fraction=0.0)
    first, second = loaded.bags
    assert first.sentences == ["Paris is big .", "It rains there often .", "The capital is Paris ."]
    assert first.sentence_labels == [0.0, 0.0, 1.0] and first.label == 1.0
    assert second.sentence_labels == [1.0, 0.0, 0.0] and second.label == 1.0
    assert [first.response[s:e] for s, e in first.offsets] == first.sentences
    assert first.context == "where is it" and first.group == "late" and first.id == "late"


def test_negative_bags_are_the_longest_answer_free_run(tmp_path):
    item = msqa_item(
        "q1",
        sentence("Intro here ."), sentence("Answer one is Rome .", answer="Rome"),
        sentence("Filler a ."), sentence("Filler b ."), sentence("Filler c ."),
        sentence("Answer two is Oslo .", answer="Oslo"), sentence("Outro ."),
    )
    loaded = load_multispanqa(write_msqa(tmp_path, item), negative_fraction=1.0)
    positive, negative = loaded.bags
    assert positive.sentence_labels == [0, 1, 0, 0, 0, 1, 0]
    assert negative.id == "q1:neg" and negative.group == "q1" and negative.context == positive.context
    assert negative.sentences == ["Filler a .", "Filler b .", "Filler c ."]  # never starts at the answer sentence
    assert negative.response == "Filler a . Filler b . Filler c ."
    assert [negative.response[s:e] for s, e in negative.offsets] == negative.sentences
    assert negative.label == 0.0 and negative.sentence_labels == [0.0, 0.0, 0.0]
    stats = loaded.stats.as_dict()
    assert stats["positive_bags"] == 1 and stats["negative_bags"] == 1 and stats["dropped"] == {}


def test_longest_negative_run_and_crop_guard():
    assert longest_negative_run([0, 1, 0, 0, 1, 0, 0]) == (2, 4)  # earliest on ties
    assert longest_negative_run([1, 1]) == (0, 0)
    assert longest_negative_run([0, 0]) == (0, 2)
    # sentence labels that claim "no answer" while an answer span lies inside the crop must not pass silently
    lying = Bag("x", None, ["A b .", "C d ."], [(0, 5), (6, 11)], 0.0, [0.0, 0.0], response="A b . C d .")
    with pytest.raises(AssertionError, match="holds an answer token"):
        crop_to_negative(lying, [(6, 7)])


def test_multispanqa_counts_what_it_drops(tmp_path):
    all_answers = msqa_item("full", sentence("Rome .", answer="Rome"), sentence("Oslo .", answer="Oslo"))
    unlabelled = {"id": "u", "question": ["q"], "context": ["Text", "."]}
    mixed = msqa_item("mixed", sentence("Rome .", answer="Rome"), sentence("Nothing ."))
    loaded = load_multispanqa(write_msqa(tmp_path, all_answers, unlabelled, mixed), negative_fraction=1.0)
    assert [b.id for b in loaded.bags] == ["full", "mixed", "mixed:neg"]
    assert loaded.stats.dropped == {"no answer labels (unlabelled split)": 1,
                                    "negative crop: every sentence holds an answer": 1}
    assert loaded.stats.records == 3 and loaded.stats.bags == 3


def test_negative_sampling_is_seeded_and_sized(tmp_path):
    items = [msqa_item(f"q{i}", sentence("Rome .", answer="Rome"), sentence("Nothing here .")) for i in range(10)]
    root = write_msqa(tmp_path, *items)
    first = [b.id for b in load_multispanqa(root, negative_fraction=0.3, seed=1).bags if b.label == 0]
    again = [b.id for b in load_multispanqa(root, negative_fraction=0.3, seed=1).bags if b.label == 0]
    assert len(first) == 3 and first == again
    assert len(load_multispanqa(root, limit=4, negative_fraction=0.5).bags) == 6


def test_multispanqa_bad_input(tmp_path):
    bad_tag = msqa_item("t", sentence("Rome ."))
    bad_tag["label"][0] = "X"
    with pytest.raises(DataError, match=r"item 0 \(id 't'\): unknown tag"):
        load_multispanqa(write_msqa(tmp_path / "a", bad_tag))
    short = msqa_item("s", sentence("Rome is here ."))
    short["label"].pop()
    with pytest.raises(DataError, match="4 context tokens but 3 labels"):
        load_multispanqa(write_msqa(tmp_path / "b", short))
    with pytest.raises(DataError, match="file not found"):
        load_multispanqa(tmp_path / "nowhere")
    (tmp_path / "d" / "MultiSpanQA_data").mkdir(parents=True)
    (tmp_path / "d" / "MultiSpanQA_data" / "valid.json").write_text("[]")
    with pytest.raises(DataError, match="expected"):
        load_multispanqa(tmp_path / "d")
    fine = msqa_item("f", sentence("Rome is here .", answer="Rome"), sentence("It is old ."))
    with pytest.raises(ConfigError, match="negative_fraction"):
        load_multispanqa(write_msqa(tmp_path / "c", fine), negative_fraction=2)
    with pytest.raises(ConfigError, match="unknown bag construction 'crop'; choose one of: paired"):
        load_multispanqa(tmp_path / "c", construction="crop")


PRED1 = "Alpha is first. Beta is off topic. Gamma is last."


def feedback_item(prediction1: str = PRED1, errors=None, preference=(1, 2, 0, 1, 2, 0), **predictions) -> dict:
    item = {"question": "What is alpha?", "passages": [["Alpha", "Alpha\n\nAlpha is a letter.", "It is first."]],
            "gold": "Alpha is a letter.", "prediction 1": prediction1,
            "feedback": {"errors": errors if errors is not None else [], "missing-info": [],
                         "corrected-prediction": ""},
            "preference": list(preference)}
    for k in (2, 3, 4):
        item[f"prediction {k}"] = predictions.get(f"p{k}", f"Answer {k}. More {k}.")
    return item


def write_feedback(root, *items):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dev_feedback.json").write_text(json.dumps(list(items)))
    return root


def test_irrelevant_spans_label_sentences_and_min_or_mean_bag_label(tmp_path):
    beta = PRED1.index("Beta")
    errors = [{"error type": "Irrelevant", "explanation": "", "start": beta, "end": PRED1.index("Gamma") - 1},
              {"error type": "Wrong-Grounding", "explanation": "{}", "start": 0, "end": 5}]  # ignored
    root = write_feedback(tmp_path, feedback_item(errors=errors))
    (bag,) = load_qa_feedback(root).bags
    assert bag.sentences == ["Alpha is first.", "Beta is off topic.", "Gamma is last."]
    assert [bag.response[s:e] for s, e in bag.offsets] == bag.sentences
    assert bag.sentence_labels == [1.0, 0.0, 1.0] and bag.label == 0.0
    assert bag.id == "qa_feedback-0:p1" and bag.group == "qa_feedback-0"
    assert bag.context.startswith("What is alpha?\n\nAlpha\nAlpha\n\nAlpha is a letter. It is first.")
    (mean_bag,) = load_qa_feedback(root, bag_rule="mean").bags
    assert mean_bag.label == pytest.approx(2 / 3)


def test_span_overlap_is_end_exclusive_and_partial(tmp_path):
    # [0, 15) ends exactly where sentence 1 ends: only sentence 1 is irrelevant.
    # A span crossing the boundary of sentences 2 and 3 makes both irrelevant.
    crossing = {"error type": "Irrelevant", "explanation": "", "start": PRED1.index("topic"),
                "end": PRED1.index("Gamma") + 3}
    items = [feedback_item(errors=[{"error type": "Irrelevant", "explanation": "", "start": 0, "end": 15}]),
             feedback_item(errors=[crossing]), feedback_item(errors=[])]
    bags = load_qa_feedback(write_feedback(tmp_path, *items)).bags
    assert [b.sentence_labels for b in bags] == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert [b.label for b in bags] == [0.0, 0.0, 1.0]


def test_preference_pairs_follow_upstream_order(tmp_path):
    loaded = load_qa_feedback(write_feedback(tmp_path, feedback_item()))
    assert [p.id for p in loaded.pairs] == [f"qa_feedback-0:p{i}-p{j}" for i, j in
                                            [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]]
    assert [p.preference for p in loaded.pairs] == [1.0, 0.0, 0.5, 1.0, 0.0, 0.5]
    first = loaded.pairs[0]
    assert first.a.text == PRED1 and first.b.sentences == ["Answer 2.", "More 2."]
    assert first.group == "qa_feedback-0" and first.context == loaded.bags[0].context
    assert loaded.stats.pairs == 6 and loaded.stats.dropped == {}


def test_qa_feedback_counts_empty_predictions(tmp_path):
    loaded = load_qa_feedback(write_feedback(tmp_path, feedback_item(prediction1="  ", p3="")))
    assert loaded.bags == []
    assert loaded.stats.dropped == {"prediction 1 has no sentences": 1, "pair with an empty prediction": 5}
    assert [p.id for p in loaded.pairs] == ["qa_feedback-0:p2-p4"]


def test_qa_feedback_bad_input(tmp_path):
    with pytest.raises(DataError, match=r"item 0: preference 3 .*expected 0, 1 or 2"):
        load_qa_feedback(write_feedback(tmp_path / "a", feedback_item(preference=(3, 1, 1, 1, 1, 1))))
    with pytest.raises(DataError, match="5 preferences, expected 6"):
        load_qa_feedback(write_feedback(tmp_path / "b", feedback_item(preference=(1, 1, 1, 1, 1))))
    outside = [{"error type": "Irrelevant", "explanation": "", "start": 10, "end": 999}]
    with pytest.raises(DataError, match="lies outside 'prediction 1'"):
        load_qa_feedback(write_feedback(tmp_path / "c", feedback_item(errors=outside)))
    missing = feedback_item()
    del missing["feedback"]
    with pytest.raises(DataError, match="item 0: 'feedback'"):
        load_qa_feedback(write_feedback(tmp_path / "d", missing))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "dev_feedback.json").write_text("{}")
    with pytest.raises(DataError, match="expected a JSON list"):
        load_qa_feedback(tmp_path / "e")
    with pytest.raises(DataError, match="bag_rule"):
        load_qa_feedback(tmp_path / "d", bag_rule="max")


def test_real_multispanqa_invariants(shared_data):
    loaded = load_multispanqa(shared_data / "fractal" / "multispanqa", limit=40, negative_fraction=0.5)
    positives = [b for b in loaded.bags if not b.id.endswith(":neg")]
    negatives = [b for b in loaded.bags if b.id.endswith(":neg")]
    assert len(positives) == 40 and len(negatives) + sum(loaded.stats.dropped.values()) == 20
    for bag in loaded.bags:
        assert set(bag.sentence_labels) <= {0.0, 1.0}
        assert bag.label == max(bag.sentence_labels)
        assert [bag.response[s:e] for s, e in bag.offsets] == bag.sentences
    assert all(b.label == 1.0 for b in positives)
    by_id = {b.id: b for b in positives}
    for neg in negatives:
        assert neg.label == 0.0 and not any(neg.sentence_labels)
        assert neg.response in by_id[neg.group].response


def test_real_qa_feedback_invariants(shared_data):
    loaded = load_qa_feedback(shared_data / "fractal" / "qa_feedback", limit=30)
    assert len(loaded.bags) == 30 and len(loaded.pairs) == 180
    for bag in loaded.bags:
        assert set(bag.sentence_labels) <= {0.0, 1.0}
        assert bag.label == min(bag.sentence_labels)
        assert [bag.response[s:e] for s, e in bag.offsets] == bag.sentences
    assert 0 < sum(b.label for b in loaded.bags) < 30  # both classes occur
    assert {p.preference for p in loaded.pairs} <= {0.0, 0.5, 1.0}
    for pair in loaded.pairs:
        for side in (pair.a, pair.b):
            assert [side.text[s:e] for s, e in side.offsets] == side.sentences
