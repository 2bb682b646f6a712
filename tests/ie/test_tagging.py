import numpy as np
import pytest

from adaptlab.data.records import Record, Span
from adaptlab.ie.tagging import (
    IGNORE_INDEX,
    allowed_transitions,
    bio_labels,
    constrained_decode,
    decode_words,
    encode_record,
)

LABELS = ["O", "B-A", "I-A", "B-B", "I-B"]


def test_constrained_decode_never_emits_invalid_iob2():
    rng = np.random.default_rng(0)
    allowed = allowed_transitions(LABELS)
    for _ in range(200):
        probs = rng.dirichlet(np.ones(len(LABELS)), size=rng.integers(1, 12))
        path = [LABELS[i] for i in constrained_decode(np.log(probs), allowed)]
        previous = "O"
        for tag in path:
            if tag.startswith("I-"):
                assert previous in ("B-" + tag[2:], tag)
            previous = tag


def test_constrained_decode_is_the_best_valid_path():
    lp = np.log(np.array([[0.1, 0.1, 0.6, 0.1, 0.1], [0.1, 0.1, 0.7, 0.05, 0.05], [0.8, 0.05, 0.05, 0.05, 0.05]]))
    assert [LABELS[i] for i in constrained_decode(lp, allowed_transitions(LABELS))] == ["B-A", "I-A", "O"]
    valid = np.log(np.array([[0.1, 0.8, 0.05, 0.03, 0.02], [0.1, 0.05, 0.8, 0.03, 0.02]]))
    assert constrained_decode(valid, allowed_transitions(LABELS)) == [1, 2]


def test_encode_labels_first_subword_only(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    record = Record("Axolotls inhabit Xochimilco canals.", [Span(0, 8, "A"), Span(17, 34, "B")])
    label2id = {label: i for i, label in enumerate(bio_labels(["A", "B"]))}
    enc = encode_record(record, tok, label2id, max_length=64)
    labelled = [(w, lab) for w, lab in zip(enc.word_ids, enc.labels) if lab != IGNORE_INDEX]
    assert [w for w, _ in labelled] == [0, 1, 2, 3, 4]
    id2label = {i: label for label, i in label2id.items()}
    assert [id2label[lab] for _, lab in labelled] == ["B-A", "O", "B-B", "I-B", "O"]
    assert enc.truncated_words == 0
    short = encode_record(record, tok, label2id, max_length=4)
    assert short.truncated_words > 0


def test_decode_words_maps_back_to_characters():
    text = "Frogs live in ponds ."
    offsets = [(0, 5), (6, 10), (11, 13), (14, 19), (20, 21)]
    spans, scores = decode_words(text, offsets, ["B-S", "O", "O", "B-H", "O"], [0.9, 1, 1, 0.7, 1])
    assert [(text[s.start:s.end], s.label) for s in spans] == [("Frogs", "S"), ("ponds", "H")]
    assert scores == pytest.approx([0.9, 0.7])
