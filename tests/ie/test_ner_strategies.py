"""The strategy block on the NER student end to end: a LoRA adapter run saves labels and head, and the saved
adapter (or merged model) predicts exactly what the trained model does; layers freezing reaches the student."""

from __future__ import annotations

import json

import pytest
from test_ner_cli import FAST, synthetic_records

from adaptlab.data.records import write_records
from adaptlab.ie.ner import NERPredictor


@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_a_lora_student_saves_and_predicts(save, tmp_path, tiny_bert_dir, run_cli):
    write_records(synthetic_records(24, 0), tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "training.num_train_epochs=2", "training.learning_rate=5e-3",
                           "strategy.peft.r=4", f"strategy.peft.save={save}", *FAST)
    assert code == 0, err
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "adapter_config.json").is_file() == (save == "adapter")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    peft = metrics["strategies"]["peft"]
    assert 0 < peft["trainable_share"] < 0.5 and not peft.get("adapter_unchanged")
    predictor = NERPredictor(model_dir)
    assert sorted(set(predictor.id2label.values())) == sorted(metrics["labels"])
    texts = [r.text for r in synthetic_records(4, 9)]
    again = NERPredictor(model_dir).predict(texts)
    assert [r.spans for r in predictor.predict(texts)] == [r.spans for r in again]


def test_freezing_the_first_layer_leaves_it_unchanged(tmp_path, tiny_bert_dir, run_cli):
    import torch
    from transformers import AutoModelForTokenClassification

    write_records(synthetic_records(16, 0), tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "training.num_train_epochs=3", "training.warmup_steps=0",
                           "dev_fraction=0",
                           "strategy.layers.freeze_first=1", "strategy.layers.freeze_embeddings=true", *FAST)
    assert code == 0, err
    before = AutoModelForTokenClassification.from_pretrained(tiny_bert_dir, num_labels=5)
    after = AutoModelForTokenClassification.from_pretrained(tmp_path / "run" / "model")
    first, first_after = before.bert.encoder.layer[0], after.bert.encoder.layer[0]
    assert torch.equal(first.output.dense.weight, first_after.output.dense.weight)
    assert torch.equal(before.bert.embeddings.word_embeddings.weight, after.bert.embeddings.word_embeddings.weight)
    assert not torch.equal(before.bert.encoder.layer[1].output.dense.weight,
                           after.bert.encoder.layer[1].output.dense.weight)
