"""``strategy.distill`` on encoder students (NER and text classification), with tiny random BERT teachers saved to
temporary directories: the KD term against a float64 hand computation, labels matched by name, refusals of a
wrong teacher (also through the CLI, exit 2), unlabeled rows that learn from KD alone, a student cut from the
teacher's layers, the cached and uncached teacher agreeing, a teacher with another tokenizer aligned by word, and
end-to-end ``ner train`` / ``cls train`` runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from adaptlab.data.records import Record, write_records
from adaptlab.errors import DataError, StrategyError
from adaptlab.ie.ner import _dataset as ner_rows
from adaptlab.ie.text_classifier import unlabeled_rows
from adaptlab.tuning.distill.encoder import binary_label_kl, label_kl
from adaptlab.tuning.families import ENCODER_SEQUENCE, ENCODER_TOKEN
from adaptlab.tuning.strategies import StrategyBlock, TaskData, prepare, train_dataset
from zorb_records import FILLERS, zorb_records

NER_LABELS = ["O", "B-ANIMAL", "I-ANIMAL", "B-PLACE", "I-PLACE"]
CLS_LABELS = ["food", "sport", "tech"]
ANIMALS, PLACES = ["zorbfish", "zorbtoad", "zorbowl"], ["lakeshore", "lakeside", "lake"]
MAX_LENGTH = 64
FAST = ["training.progress=false", "training.per_device_train_batch_size=8", "training.warmup_steps=0"]


def ner_records(n: int, seed: int) -> list[Record]:
    """Sentences whose 'zorb' words are ANIMAL and 'lake' words PLACE (several subwords each in MiniLM's vocab)."""
    return zorb_records(n, seed, ANIMALS, PLACES, words=(3, 7), entity_share=0.25)


def config(vocab_size: int, layers: int, labels: list[str], **extra) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=24, id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)},
                      **{"max_position_embeddings": 128, **extra})


def save_teacher(path: Path, tokenizer, head, labels: list[str], layers: int = 6, seed: int = 0, **extra) -> Path:
    """A random teacher with a sharpened head (so that its distributions are far from uniform), saved with its
    tokenizer, as ``adaptlab ner/cls train`` saves a model directory."""
    torch.manual_seed(seed)
    model = head(config(len(tokenizer), layers, labels, **extra))
    with torch.no_grad():
        model.classifier.weight.mul_(40)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def permuted_teacher(source: Path, target: Path, head, order: list[int]) -> Path:
    """The same teacher with its labels stored in another order (``order[j]``: the source index of new label j)."""
    model = head.from_pretrained(source)
    labels = [model.config.id2label[i] for i in order]
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[order])
        model.classifier.bias.copy_(model.classifier.bias[order])
    model.config.id2label, model.config.label2id = dict(enumerate(labels)), {x: i for i, x in enumerate(labels)}
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def student(tokenizer, head, labels: list[str], seed: int = 1, **extra):
    """A random 2-layer student without dropout, so that two forward passes agree."""
    torch.manual_seed(seed)
    return head(config(len(tokenizer), 2, labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       **extra))


def ner_task(tokenizer, records: list[Record], tmp_path: Path) -> TaskData:
    return TaskData(tmp_path, tokenizer, [r.text for r in records], NER_LABELS,
                    lambda texts: ner_rows([Record(text=t) for t in texts], tokenizer, None, MAX_LENGTH)[0],
                    MAX_LENGTH, 0)


def distilled_ner(tokenizer, teacher: Path, records: list[Record], tmp_path: Path, model=None, **settings):
    """(model, strategy, training rows) after prepare and train_dataset, as ``train_ner`` does them."""
    task = ner_task(tokenizer, records, tmp_path)
    block = StrategyBlock.model_validate({"distill": {"teacher": str(teacher), **settings}})
    model, strategies = prepare(block, ENCODER_TOKEN, model or student(tokenizer, BertForTokenClassification,
                                                                       NER_LABELS), task)
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    rows = train_dataset(strategies, ner_rows(records, tokenizer, label2id, MAX_LENGTH)[0], task)
    return model, strategies[0], rows


def batch_of(strategy, inner, rows) -> dict:
    return strategy.collator(inner)([{k: v for k, v in row.items() if k != "length"} for row in rows])


def kd_term(model, strategy, batch: dict) -> torch.Tensor:
    outputs = model(**{k: v for k, v in batch.items() if k not in strategy.extra_columns})
    return strategy.loss_terms(model, batch, outputs)["distill"]


@pytest.fixture
def ner_teacher(tmp_path, tokenizer) -> Path:
    return save_teacher(tmp_path / "ner-teacher", tokenizer, BertForTokenClassification, NER_LABELS)


# ------------------------------------------------------------------------------------------------ the loss


def test_kd_formulas_equal_a_float64_hand_computation():
    rng = np.random.default_rng(0)
    t, s, temperature = rng.normal(0, 3, (7, 5)), rng.normal(0, 3, (7, 5)), 2.5

    def log_softmax(z):
        z = z / temperature
        return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)

    expected = (np.exp(log_softmax(t)) * (log_softmax(t) - log_softmax(s))).sum(-1).mean()
    got = label_kl(torch.tensor(t, dtype=torch.float32), torch.tensor(s, dtype=torch.float32), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    q, p = 1 / (1 + np.exp(-t / temperature)), 1 / (1 + np.exp(-s / temperature))
    binary = (q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))).mean()
    got = binary_label_kl(torch.tensor(t, dtype=torch.float32), torch.tensor(s, dtype=torch.float32), temperature)
    assert got.item() == pytest.approx(binary, rel=1e-5)
    assert label_kl(torch.tensor(t[:0]), torch.tensor(s[:0]), 2.0).item() == 0.0


def test_ner_kd_term_is_alpha_t2_kl_over_the_first_subword_of_every_word(tokenizer, ner_teacher, tmp_path):
    """Hand computation in float64 from the teacher run on its own: positions are each word's first subword,
    never [CLS]/[SEP], continuation subwords or padding; labelled and unlabeled rows alike."""
    records = ner_records(6, 0)
    (tmp_path / "more.txt").write_text("a zorbowl near the lakeside\nquiet lake\n")
    alpha, temperature = 0.3, 2.5
    model, strategy, rows = distilled_ner(tokenizer, ner_teacher, records, tmp_path, alpha=alpha,
                                          temperature=temperature, unlabeled=[str(tmp_path / "more.txt")])
    batch = batch_of(strategy, DataCollatorForTokenClassification(tokenizer), rows)
    term = kd_term(model, strategy, batch)
    student_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    teacher = BertForTokenClassification.from_pretrained(ner_teacher).double().eval()
    kls, continued = [], False
    texts = [r.text for r in records] + ["a zorbowl near the lakeside", "quiet lake"]
    for row, text in enumerate(texts):
        words = text.split()
        encoded = tokenizer(words, is_split_into_words=True)
        with torch.no_grad():
            t = teacher(input_ids=torch.tensor([encoded["input_ids"]])).logits[0].numpy() / temperature
        firsts = [encoded.word_ids().index(w) for w in range(len(words))]
        continued = continued or any(b - a > 1 for a, b in zip(firsts, firsts[1:]))
        s = student_logits[row].detach().double().numpy() / temperature
        for pos in firsts:
            p_t = np.exp(t[pos] - t[pos].max()) / np.exp(t[pos] - t[pos].max()).sum()
            log_s = s[pos] - s[pos].max() - np.log(np.exp(s[pos] - s[pos].max()).sum())
            kls.append((p_t * (np.log(p_t) - log_s)).sum())
    assert continued  # some words have continuation subwords, which are not scored
    assert batch["teacher_positions"].sum().item() == len(kls)
    assert term.item() == pytest.approx(alpha * temperature ** 2 * np.mean(kls), rel=1e-5)
    assert strategy.task_loss_weight() == pytest.approx(1 - alpha)


def test_dev_batches_get_no_kd_term(tokenizer, ner_teacher, tmp_path):
    records = ner_records(4, 0)
    model, strategy, _ = distilled_ner(tokenizer, ner_teacher, records, tmp_path)
    dev_rows = ner_rows(records, tokenizer, {label: i for i, label in enumerate(NER_LABELS)}, MAX_LENGTH)[0]
    batch = batch_of(strategy, DataCollatorForTokenClassification(tokenizer), dev_rows)
    assert not set(strategy.extra_columns) & set(batch)
    assert strategy.loss_terms(model, batch, model(**batch)) == {}


# ---------------------------------------------------------------------------------- labels and refusals


def test_teacher_labels_are_matched_by_name(tokenizer, ner_teacher, tmp_path):
    """A teacher storing its labels in another order gives the same KD term, for NER and classification."""
    order = [3, 0, 4, 2, 1]
    shuffled = permuted_teacher(ner_teacher, tmp_path / "shuffled", BertForTokenClassification, order)
    assert json.loads((shuffled / "config.json").read_text())["id2label"]["0"] == "B-PLACE"
    records = ner_records(5, 1)
    terms = []
    for teacher in (ner_teacher, shuffled):
        model, strategy, rows = distilled_ner(tokenizer, teacher, records, tmp_path)
        terms.append(kd_term(model, strategy, batch_of(strategy, DataCollatorForTokenClassification(tokenizer),
                                                       rows)).item())
        assert strategy.summary()["labels_reordered"] == (teacher == shuffled)
    assert terms[0] == pytest.approx(terms[1], rel=1e-6)

    cls_teacher = save_teacher(tmp_path / "cls-teacher", tokenizer, BertForSequenceClassification, CLS_LABELS)
    cls_shuffled = permuted_teacher(cls_teacher, tmp_path / "cls-shuffled", BertForSequenceClassification, [2, 0, 1])
    texts = ["great pizza today", "a new phone chip", "the match was a goal"]
    cls_terms = [cls_kd_term(tokenizer, teacher, texts, tmp_path) for teacher in (cls_teacher, cls_shuffled)]
    assert cls_terms[0] == pytest.approx(cls_terms[1], rel=1e-6)


def cls_kd_term(tokenizer, teacher: Path, texts: list[str], tmp_path: Path, **settings) -> float:
    model, strategy, rows = distilled_cls(tokenizer, teacher, texts, tmp_path, **settings)
    batch = batch_of(strategy, DataCollatorWithPadding(tokenizer), rows)
    model.train()
    return kd_term(model, strategy, batch).item()


def distilled_cls(tokenizer, teacher: Path, texts: list[str], tmp_path: Path, **settings):
    task = TaskData(tmp_path, tokenizer, texts, CLS_LABELS, lambda more: unlabeled_rows(more, tokenizer, MAX_LENGTH),
                    MAX_LENGTH, 0)
    block = StrategyBlock.model_validate({"distill": {"teacher": str(teacher), **settings}})
    model, strategies = prepare(block, ENCODER_SEQUENCE, student(tokenizer, BertForSequenceClassification,
                                                                 CLS_LABELS), task)
    rows = train_dataset(strategies, unlabeled_rows(texts, tokenizer, MAX_LENGTH).map(
        lambda row, i: {"labels": i % len(CLS_LABELS)}, with_indices=True), task)
    return model, strategies[0], rows


@pytest.mark.parametrize("case", ["other labels", "other task"])
def test_ner_train_refuses_a_wrong_teacher_listing_both_label_sets(case, tokenizer, tiny_bert_dir, tmp_path,
                                                                   run_cli):
    if case == "other labels":
        teacher = save_teacher(tmp_path / "t", tokenizer, BertForTokenClassification, ["O", "B-ANIMAL", "I-ANIMAL"])
        expected = ["['O', 'B-ANIMAL', 'I-ANIMAL']", str(NER_LABELS), "lacks ['B-PLACE', 'I-PLACE']"]
    else:
        teacher = save_teacher(tmp_path / "t", tokenizer, BertForSequenceClassification, CLS_LABELS)
        expected = [str(CLS_LABELS), str(NER_LABELS), "BertForSequenceClassification", "token classification"]
    write_records(ner_records(12, 0), tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", f"strategy.distill.teacher={teacher}", *FAST)
    assert code == 2, err
    assert "strategy.distill" in err and all(text in err for text in expected), err
    assert not (tmp_path / "run").exists()


def test_cls_train_refuses_a_token_classification_teacher(tokenizer, tiny_bert_dir, ner_teacher, tmp_path, run_cli):
    rows = [{"text": f"{word} today", "label": label} for label, word in
            [("food", "pizza"), ("sport", "goal"), ("tech", "phone")] * 4]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, _, err = run_cli("cls", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", f"strategy.distill.teacher={ner_teacher}", *FAST)
    assert code == 2 and "BertForTokenClassification" in err and str(NER_LABELS) in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [
    ({"loss": "jsd"}, "loss apply to causal LM students only"),
    ({"top_k": 5, "on_policy_fraction": 0.5}, "on_policy_fraction, top_k apply to causal LM students only"),
    ({"init_layers": [4, 2]}, "init_layers is [4, 2]"),
    ({"init_layers": [0, 6]}, "the teacher has 6"),
    ({"init_layers": []}, "init_layers is []"),
])
def test_settings_that_do_not_fit_an_encoder_are_refused(settings, message, tokenizer, ner_teacher, tmp_path):
    with pytest.raises(StrategyError, match="strategy.distill") as caught:
        distilled_ner(tokenizer, ner_teacher, ner_records(2, 0), tmp_path, **settings)
    assert message in str(caught.value)


def test_a_missing_teacher_is_named(tokenizer, tmp_path):
    with pytest.raises(StrategyError, match="teacher: .*nowhere does not exist"):
        distilled_ner(tokenizer, tmp_path / "nowhere", ner_records(2, 0), tmp_path)


# ------------------------------------------------------------------------------------------ unlabeled text


def test_unlabeled_rows_are_added_cleaned_and_learn_from_kd_alone(tokenizer, ner_teacher, tmp_path):
    from transformers import TrainingArguments

    from adaptlab.tuning.trainer import StrategyTrainer

    records = ner_records(4, 2)
    (tmp_path / "u.txt").write_text(f"  quiet lake  \n\nquiet lake\n{records[0].text}\na zorbowl near the lake\n")
    model, strategy, rows = distilled_ner(tokenizer, ner_teacher, records, tmp_path, alpha=0.4,
                                          unlabeled=[str(tmp_path / "u.txt")])
    assert len(rows) == len(records) + 2
    assert all(label == -100 for row in rows.select(range(4, 6)) for label in row["labels"])
    assert strategy.summary()["unlabeled"] == {"files": 1, "read": 5, "blank": 1, "repeated": 1,
                                               "labelled_already": 1, "kept": 2}
    trainer = StrategyTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none"),
                              strategies=[strategy])
    batch = batch_of(strategy, DataCollatorForTokenClassification(tokenizer), rows.select(range(4, 6)))
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    from_trainer = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    kd = kd_term(model, strategy, batch)
    kd.backward()
    assert loss.item() == pytest.approx(kd.item(), rel=1e-6) and kd.item() > 0
    assert all(torch.allclose(a, p.grad) for a, p in zip(from_trainer, model.parameters()))
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("content", ["", "  \n\t\n   \n"])
def test_an_unlabeled_file_without_text_is_a_clear_error(content, tiny_bert_dir, ner_teacher, tmp_path, run_cli):
    (tmp_path / "empty.txt").write_text(content)
    write_records(ner_records(12, 0), tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", f"strategy.distill.teacher={ner_teacher}",
                           f"strategy.distill.unlabeled=[{tmp_path / 'empty.txt'}]", *FAST)
    assert code == 2, err
    assert "strategy.distill.unlabeled" in err and "empty.txt" in err, err
    assert not (tmp_path / "run").exists()


def test_unlabeled_texts_that_are_all_labelled_already_are_refused(tokenizer, ner_teacher, tmp_path):
    records = ner_records(3, 0)
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": r.text, "label": "x"}) + "\n" for r in records))
    with pytest.raises(StrategyError, match="nothing is left to distil"):
        distilled_ner(tokenizer, ner_teacher, records, tmp_path, unlabeled=[str(tmp_path / "u.jsonl")])
    (tmp_path / "bad.jsonl").write_text('{"words": ["a"]}\n')
    with pytest.raises(DataError, match=r"strategy.distill.unlabeled: .*bad.jsonl:1: expected a JSON object"):
        distilled_ner(tokenizer, ner_teacher, records, tmp_path, unlabeled=[str(tmp_path / "bad.jsonl")])


# ------------------------------------------------------------------------------------ student from layers


def test_init_layers_cuts_the_student_from_the_chosen_teacher_layers(tokenizer, ner_teacher, tmp_path):
    """Layers 0, 2, 4 of a 6-layer teacher, its embeddings and its head (rows reordered into the student's
    labels when the teacher stores them in another order); the teacher's weights are copied, not shared."""
    shuffled = permuted_teacher(ner_teacher, tmp_path / "shuffled", BertForTokenClassification, [3, 0, 4, 2, 1])
    model, strategy, _ = distilled_ner(tokenizer, shuffled, ner_records(3, 0), tmp_path, init_layers=[0, 2, 4])
    teacher = BertForTokenClassification.from_pretrained(ner_teacher)  # stored in the student's label order
    assert model.config.num_hidden_layers == 3 and len(model.bert.encoder.layer) == 3
    for new, old in enumerate([0, 2, 4]):
        mine, theirs = model.bert.encoder.layer[new].state_dict(), teacher.bert.encoder.layer[old].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                           teacher.bert.encoder.layer[1].output.dense.weight)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(model.classifier.weight, teacher.classifier.weight)
    assert torch.equal(model.classifier.bias, teacher.classifier.bias)
    assert model.config.id2label == dict(enumerate(NER_LABELS))
    assert model.bert.embeddings.word_embeddings.weight.data_ptr() != \
        teacher.bert.embeddings.word_embeddings.weight.data_ptr()
    assert strategy.summary()["student_layers"] == 3 and strategy.summary()["teacher_layers"] == 6


def test_a_student_cut_from_a_teacher_with_fewer_positions_than_the_data_is_refused(tokenizer, tmp_path):
    teacher = save_teacher(tmp_path / "short", tokenizer, BertForTokenClassification, NER_LABELS,
                           max_position_embeddings=32)
    task = TaskData(tmp_path, tokenizer, ["a lake"], NER_LABELS, None, 64)
    block = StrategyBlock.model_validate({"distill": {"teacher": str(teacher), "init_layers": [0, 1]}})
    with pytest.raises(StrategyError, match="reads at most 32 subwords, but the data is encoded to 64"):
        prepare(block, ENCODER_TOKEN, student(tokenizer, BertForTokenClassification, NER_LABELS), task)


# ------------------------------------------------------------------------------------------- the teacher


def test_cached_and_uncached_teacher_give_the_same_loss(tokenizer, ner_teacher, tmp_path):
    records = ner_records(5, 3)
    terms = []
    for cache in (True, False):
        model, strategy, rows = distilled_ner(tokenizer, ner_teacher, records, tmp_path, cache_teacher=cache)
        assert ("teacher_logits" in rows.column_names) == cache
        terms.append(kd_term(model, strategy, batch_of(strategy, DataCollatorForTokenClassification(tokenizer),
                                                       rows)).item())
    assert terms[0] > 0 and terms[0] == pytest.approx(terms[1], rel=1e-5)

    cls_teacher = save_teacher(tmp_path / "cls-teacher", tokenizer, BertForSequenceClassification, CLS_LABELS)
    texts = ["great pizza today", "a new phone chip", "the match was a goal"]
    cached, uncached = (cls_kd_term(tokenizer, cls_teacher, texts, tmp_path, cache_teacher=c) for c in (True, False))
    assert cached > 0 and cached == pytest.approx(uncached, rel=1e-5)


def word_level_tokenizer(words: list[str]):
    """A tokenizer unlike the student's: one id per whole word."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def test_a_teacher_with_another_tokenizer_is_aligned_by_word(tokenizer, tmp_path):
    """Its logits at each word's first token (its own tokenization) land on the word's first subword in the
    student's; without the cache, or to cut layers from it, it is refused (its ids are not the student's)."""
    word_tokenizer = word_level_tokenizer(ANIMALS + PLACES + FILLERS)
    teacher_dir = save_teacher(tmp_path / "word-teacher", word_tokenizer, BertForTokenClassification, NER_LABELS)
    records = ner_records(4, 5)
    _, strategy, rows = distilled_ner(tokenizer, teacher_dir, records, tmp_path)
    assert strategy.summary()["same_tokenizer"] is False
    teacher = BertForTokenClassification.from_pretrained(teacher_dir).eval()
    for record, row in zip(records, rows):
        words = record.text.split()
        student_ids = tokenizer(words, is_split_into_words=True)
        assert row["teacher_positions"] == [student_ids.word_ids().index(w) for w in range(len(words))]
        with torch.no_grad():  # one token per word, after [CLS]
            expected = teacher(**word_tokenizer(record.text, return_tensors="pt")).logits[0, 1:-1]
        assert torch.allclose(torch.tensor(row["teacher_logits"]), expected, atol=1e-5)
    for settings in ({"cache_teacher": False}, {"init_layers": [0, 1]}):
        with pytest.raises(StrategyError, match="needs the student to use the teacher's tokenizer"):
            distilled_ner(tokenizer, teacher_dir, records, tmp_path, **settings)


# --------------------------------------------------------------------------------- multi-label, relations


def test_multi_label_students_get_binary_kd_and_no_unlabeled_rows(tokenizer, tmp_path):
    teacher = save_teacher(tmp_path / "ml", tokenizer, BertForSequenceClassification, CLS_LABELS,
                           problem_type="multi_label_classification")
    single = save_teacher(tmp_path / "single", tokenizer, BertForSequenceClassification, CLS_LABELS)
    texts = ["pizza and a goal", "a phone"]
    task = TaskData(tmp_path, tokenizer, texts, CLS_LABELS, lambda more: unlabeled_rows(more, tokenizer, 32), 32)
    model = student(tokenizer, BertForSequenceClassification, CLS_LABELS, problem_type="multi_label_classification")
    block = StrategyBlock.model_validate({"distill": {"teacher": str(teacher), "temperature": 3.0}})
    model, strategies = prepare(block, ENCODER_SEQUENCE, model, task)
    rows = train_dataset(strategies, unlabeled_rows(texts, tokenizer, 32).remove_columns("labels"), task)
    batch = batch_of(strategies[0], DataCollatorWithPadding(tokenizer), rows)
    term = kd_term(model, strategies[0], batch)
    expected = 0.5 * 9 * binary_label_kl(batch["teacher_logits"], model(input_ids=batch["input_ids"],
                                         attention_mask=batch["attention_mask"]).logits, 3.0)
    assert term.item() == pytest.approx(expected.item(), rel=1e-6)
    (tmp_path / "u.txt").write_text("more text\n")
    with pytest.raises(StrategyError, match="multi-label"):
        prepare(StrategyBlock.model_validate({"distill": {"teacher": str(teacher), "unlabeled": ["u.txt"]}}),
                ENCODER_SEQUENCE, model, task)
    with pytest.raises(StrategyError, match="is single-label .* the student multi-label"):
        prepare(StrategyBlock.model_validate({"distill": {"teacher": str(single)}}), ENCODER_SEQUENCE, model, task)


def test_a_trainer_without_unlabeled_rows_refuses_unlabeled_text(tokenizer, tmp_path):
    """Relation classification distils its labelled pairs, but has no rows for raw text."""
    teacher = save_teacher(tmp_path / "re", tokenizer, BertForSequenceClassification, CLS_LABELS)
    (tmp_path / "u.txt").write_text("some text\n")
    task = TaskData(tmp_path, tokenizer, ["[E1] a [/E1] b"], CLS_LABELS, None, 32)
    block = StrategyBlock.model_validate({"distill": {"teacher": str(teacher), "unlabeled": ["u.txt"]}})
    with pytest.raises(StrategyError, match="cannot add unlabeled rows"):
        prepare(block, ENCODER_SEQUENCE, student(tokenizer, BertForSequenceClassification, CLS_LABELS), task)


# -------------------------------------------------------------------------------------------- end to end


def test_ner_train_distils_unlabeled_text_into_a_student_cut_from_the_teacher(ner_teacher, tiny_bert_dir, tmp_path,
                                                                             run_cli):
    from adaptlab.ie.ner import NERPredictor

    write_records(ner_records(24, 0), tmp_path / "train.jsonl")
    write_records(ner_records(8, 1), tmp_path / "dev.jsonl")
    (tmp_path / "unlabeled.txt").write_text("\n".join(r.text for r in ner_records(16, 2)) + "\n")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--dev", tmp_path / "dev.jsonl",
                           "--model", tiny_bert_dir, "--output", tmp_path / "run", "training.num_train_epochs=2",
                           f"strategy.distill.teacher={ner_teacher}", "strategy.distill.init_layers=[0,2,4]",
                           f"strategy.distill.unlabeled=[{tmp_path / 'unlabeled.txt'}]", *FAST)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    done = metrics["strategies"]["distill"]
    assert done["labelled_rows"] == 24 and done["unlabeled"]["kept"] == done["rows_distilled"] - 24 > 0
    assert done["student_layers"] == 3 and done["init_layers"] == [0, 2, 4]
    assert any("eval_loss" in row for row in metrics["history"])
    predictor = NERPredictor(tmp_path / "run" / "model")
    assert predictor.model.config.num_hidden_layers == 3
    assert len(predictor.predict(["a zorbowl near the lake"])) == 1


def test_cls_train_distils_with_unlabeled_text(tokenizer, tiny_bert_dir, tmp_path, run_cli):
    teacher = save_teacher(tmp_path / "teacher", tokenizer, BertForSequenceClassification, ["tech", "food", "sport"])
    rows = [{"text": f"{word} today", "label": label} for label, word in
            [("food", "pizza"), ("sport", "goal"), ("tech", "phone"), ("food", "soup")] * 4]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["new chip", "a match"]))
    code, _, err = run_cli("cls", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "training.num_train_epochs=2", "dev_fraction=0",
                           f"strategy.distill.teacher={teacher}", "strategy.distill.alpha=0.7",
                           f"strategy.distill.unlabeled=[{tmp_path / 'more.jsonl'}]", *FAST)
    assert code == 0, err
    done = json.loads((tmp_path / "run" / "metrics.json").read_text())["strategies"]["distill"]
    assert done["labels_reordered"] is True and done["unlabeled"]["kept"] == 2
    assert done["labelled_rows"] == 16 and done["rows_distilled"] == 18


def test_re_train_distils_from_a_relation_teacher_with_entity_markers(tiny_bert_dir, tmp_path, run_cli):
    """The relation student's tokenizer has the four marker tokens added, as the saved teacher's has: the same
    tokenizer, so the student can be cut from the teacher and the teacher can run uncached."""
    demo = Path(__file__).resolve().parents[2] / "src" / "adaptlab" / "resources" / "demo" / "train.jsonl"
    (tmp_path / "train.jsonl").write_text("".join(demo.read_text().splitlines(keepends=True)[:20]))
    common = ["--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir, "--epochs", "1", "dev_fraction=0",
              "training.progress=false"]
    assert run_cli("re", "train", *common, "--output", tmp_path / "teacher")[0] == 0
    code, _, err = run_cli("re", "train", *common, "--output", tmp_path / "student",
                           f"strategy.distill.teacher={tmp_path / 'teacher'}", "strategy.distill.init_layers=[1]",
                           "strategy.distill.cache_teacher=false")
    assert code == 0, err
    done = json.loads((tmp_path / "student" / "metrics.json").read_text())["strategies"]["distill"]
    assert done["same_tokenizer"] is True and done["student_layers"] == 1
