"""The model card of `ner train`: a full student and a LoRA adapter, each with a load snippet that runs as written."""

from __future__ import annotations

import json

import pytest
import yaml
from test_ner_cli import FAST, synthetic_records

from adaptlab.data.records import write_records
from model_cards import read_card, resolved_config, run_load_snippet, section


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner-card")
    write_records(synthetic_records(32, 0), root / "train.jsonl")
    write_records(synthetic_records(24, 1), root / "dev.jsonl")
    return root


def test_a_ner_student_card(data, tiny_bert_dir, run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("ner", "train", "--train", data / "train.jsonl", "--dev", data / "dev.jsonl", "--model",
                           tiny_bert_dir, "--output", run, "--epochs", "1", *FAST)
    assert code == 0, err
    front, body = read_card(run / "model")
    assert front == {"library_name": "transformers", "pipeline_tag": "token-classification",
                     "tags": ["adaptlab", "ner"]}  # a local base model is named in the text only (the Hub refuses it)
    assert f"- `{tiny_bert_dir}` (a local model)" in section(body, "Base model")
    assert "tags 2 entity types (ANIMAL, PLACE) with IOB2 labels" in body
    metrics = json.loads((run / "metrics.json").read_text())
    strict = metrics["dev"]["strict"]["micro"]["f1"]
    assert f"| dev strict micro F1 | {strict:.4g} |" in section(body, "Metrics")
    data_section = section(body, "Data")
    assert f"- train: `{data / 'train.jsonl'}`" in data_section and "- dev_records: 24" in data_section
    assert "- labels: 5 (O, B-ANIMAL, I-ANIMAL, B-PLACE, I-PLACE)" in data_section
    assert "strategies: none" in section(body, "Method and strategy")
    assert resolved_config(run / "model") == yaml.safe_load((run / "config.yaml").read_text())
    printed = run_load_snippet(run / "model")
    assert printed.startswith("[") and "Traceback" not in printed


def test_a_lora_adapter_card_loads_with_peft(data, tiny_bert_dir, run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("ner", "train", "--train", data / "train.jsonl", "--model", tiny_bert_dir, "--output", run,
                           "--epochs", "1", "strategy.peft.r=4", "strategy.peft.save=adapter", *FAST)
    assert code == 0, err
    front, body = read_card(run / "model")
    assert (front["library_name"], front["pipeline_tag"]) == ("peft", "token-classification")
    assert {"peft", "lora"} <= set(front["tags"])
    assert "PEFT adapter: NER student" in body and "PEFT LORA adapter of it" in body
    assert "strategy `peft`: r=4, save=adapter (trainable_parameters: " in section(body, "Method and strategy")
    snippet = section(body, "How to load it")
    assert "PeftModel.from_pretrained(base, adapter).merge_and_unload()" in snippet
    assert f'AutoModelForTokenClassification.from_pretrained("{tiny_bert_dir}"' in snippet
    assert run_load_snippet(run / "model").startswith("[")
