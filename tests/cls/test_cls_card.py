"""The model card of `cls train`: a fine-tuned classifier (pipeline snippet) and a few-shot one (adaptlab's loader);
both snippets run as written."""

from __future__ import annotations

import json

import pytest
import yaml
from test_cls_cli import FAST, single_label_rows, write_jsonl

from model_cards import read_card, resolved_config, run_load_snippet, section


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls-card")
    write_jsonl(root / "train.jsonl", single_label_rows(24, 0))
    write_jsonl(root / "dev.jsonl", single_label_rows(12, 1))
    return root


def test_a_text_classifier_card(data, tiny_bert_dir, run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("cls", "train", "--train", data / "train.jsonl", "--dev", data / "dev.jsonl", "--model",
                           tiny_bert_dir, "--output", run, "--epochs", "1", *FAST)
    assert code == 0, err
    front, body = read_card(run / "model")
    assert front == {"library_name": "transformers", "pipeline_tag": "text-classification", "tags": ["adaptlab"]}
    labels = json.loads((run / "metrics.json").read_text())["labels"]
    assert f"single-label text classifier (BertForSequenceClassification) over 3 labels ({', '.join(labels)})" in body
    dev = json.loads((run / "metrics.json").read_text())["dev"]
    metrics = section(body, "Metrics")
    assert f"| dev macro_f1 | {dev['macro_f1']:.4g} |" in metrics
    assert f"| dev accuracy | {dev['accuracy']:.4g} |" in metrics
    assert "- train_examples: 24" in section(body, "Data") and "- dev_examples: 12" in section(body, "Data")
    assert resolved_config(run / "model") == yaml.safe_load((run / "config.yaml").read_text())
    printed = run_load_snippet(run / "model")
    assert all(f"'label': '{label}'" in printed for label in labels)  # top_k=None: every label's score


def test_a_few_shot_classifier_card(data, tiny_bert_dir, run_cli, tmp_path):
    pytest.importorskip("sentence_transformers")
    run = tmp_path / "run"
    code, _, err = run_cli("cls", "train", "--train", data / "train.jsonl", "--model", tiny_bert_dir, "--output", run,
                           "dev_fraction=0", "training.progress=false", "strategy.fewshot.num_iterations=1",
                           "strategy.fewshot.progress=false")
    assert code == 0, err
    front, body = read_card(run / "model")
    assert (front["library_name"], front["pipeline_tag"]) == ("sentence-transformers", "text-classification")
    assert "few-shot" in front["tags"] and "strategy `fewshot`: num_iterations=1" in body
    printed = run_load_snippet(run / "model")
    assert sorted(eval(printed)) == sorted(json.loads((run / "metrics.json").read_text())["labels"])
