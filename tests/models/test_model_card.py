"""Model cards (adaptlab.models.card) on hand-made run directories: which directories get one, what the front matter
says, the kinds the recipe tests do not train (a stage's masked LM, a few-shot classifier, a FRACTAL scorer), and
that a card that cannot be written never fails the run. Each command's own card is tested beside the command."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from pydantic import Field
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForTokenClassification

from adaptlab.config import StrictModel
from adaptlab.models.card import model_directories
from adaptlab.models.card_facts import hub_name
from adaptlab.runs import completed_path, open_run, partial_dir
from model_cards import read_card, resolved_config, run_load_snippet, section


class CardRunConfig(StrictModel):
    name: str = Field("cards", description="run name")
    model: str = Field("minilm", description="the base model")
    train: str = Field("train.jsonl", description="training data")
    strategy: dict = Field(default_factory=dict, description="strategies")


def tiny_bert(model_class, path: Path, tokenizer_dir: Path, **config) -> Path:
    torch.manual_seed(0)
    model_class(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, max_position_embeddings=64, **config)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


def test_completed_path_inverts_partial_dir(tmp_path):
    target = tmp_path / "merged.v2"
    assert completed_path(partial_dir(target)) == target
    assert completed_path(target) == target
    assert completed_path(tmp_path / ".x.partial-abc") == tmp_path / ".x.partial-abc"


def test_model_directories_skip_checkpoints_hidden_folders_and_nested_runs(tmp_path):
    for folder in ("model", "checkpoints/checkpoint-2", "tasks/a", "tasks/b", ".model.partial-1", "domain/model",
                   "nested/model", "model/sub"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "config.json").write_text("{}")
    (tmp_path / "nested" / "config.yaml").write_text("name: inner\n")
    (tmp_path / "nested" / "metrics.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in model_directories(tmp_path)]
    assert found == ["domain/model", "model", "tasks/a", "tasks/b"]
    (tmp_path / "config.json").write_text("{}")  # a merge: the run directory is the model
    assert model_directories(tmp_path) == [tmp_path]


def test_hub_names_only_for_models_the_hub_can_resolve(tmp_path):
    assert hub_name("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "abc123"
    assert hub_name(str(snapshot)) == "HuggingFaceTB/SmolLM2-135M"
    (tmp_path / "local").mkdir()
    assert hub_name(str(tmp_path / "local")) is None
    for local in ("/models/llama", "./llama", "~/llama", "model.gguf", "runs/x/model", "bad name/with space"):
        assert hub_name(local) is None, local


def test_a_run_writes_a_card_into_each_model_directory(tmp_path, tokenizer_dir):
    """A task model and a stage's masked LM in one run: each card has its kind, the run's config and metrics, and
    its load snippet runs; the packaged student alias becomes its Hub name in the front matter."""
    labels = {0: "O", 1: "B-GENE", 2: "I-GENE"}
    metrics = {"train_records": 12, "labels": list(labels.values()),
               "dev": {"strict": {"micro": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3}, "macro": {"f1": 0.3}},
                       "overlap": {"micro": {"f1": 0.6}}, "token": {"macro": {"f1": 0.7}}}}
    config = CardRunConfig(strategy={"domain": {"steps": 3}})
    with open_run(tmp_path / "run", "cards", config) as run:
        tiny_bert(BertForTokenClassification, run.path / "model", tokenizer_dir, id2label=labels,
                  label2id={v: k for k, v in labels.items()})
        tiny_bert(BertForMaskedLM, run.path / "domain" / "model", tokenizer_dir)
        (run.path / "domain" / "stage.json").write_text("{}")
        run.finish(metrics, "NER training: cards")
    front, body = read_card(run.path / "model")
    assert front == {"library_name": "transformers", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                     "pipeline_tag": "token-classification", "tags": ["adaptlab", "ner", "domain-adaptation"]}
    assert "tags 1 entity types (GENE) with IOB2 labels" in body
    assert "| dev strict micro F1 | 0.3333 |" in section(body, "Metrics")
    assert "- train: `train.jsonl`" in section(body, "Data") and "- train_records: 12" in section(body, "Data")
    assert "strategy `domain`: steps=3" in section(body, "Method and strategy")
    assert resolved_config(run.path / "model") == config.model_dump(mode="json")
    assert "'entity_group'" in run_load_snippet(run.path / "model") or "[]" in run_load_snippet(run.path / "model")
    stage_front, stage_body = read_card(run.path / "domain" / "model")
    assert stage_front["pipeline_tag"] == "fill-mask"
    assert "result of the `domain` stage of its run" in stage_body
    assert "'token_str'" in run_load_snippet(run.path / "domain" / "model")
    assert not (run.path / "README.md").exists()


def test_few_shot_classifiers_and_fractal_scorers_load_with_adaptlab(tmp_path):
    run = tmp_path / "run"
    with open_run(run, "cards", CardRunConfig(model="org/encoder")) as opened:
        fewshot = opened.path / "model"
        fewshot.mkdir()
        (fewshot / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
        (fewshot / "modules.json").write_text("[]")
        (fewshot / "fewshot_head.json").write_text(json.dumps({"labels": ["neg", "pos"], "multi_label": False,
                                                               "head": "logistic"}))
        scorer = opened.path / "scorer"
        scorer.mkdir()
        (scorer / "scorer.json").write_text("{}")
        opened.finish({}, "few-shot")
    front, body = read_card(run / "model")
    assert (front["library_name"], front["pipeline_tag"], front["base_model"]) == (
        "sentence-transformers", "text-classification", "org/encoder")
    assert "few-shot" in front["tags"] and "logistic head" in body
    assert f'load_classifier("{run / "model"}")' in section(body, "How to load it")
    front, body = read_card(run / "scorer")
    assert "pipeline_tag" not in front and "library_name" not in front
    assert f"adaptlab fractal score --model {run / 'scorer'} --input bags.jsonl" in section(body, "How to load it")


def test_a_card_that_cannot_be_written_is_a_warning_not_a_failed_run(tmp_path, caplog):
    with open_run(tmp_path / "run", "cards", CardRunConfig()) as run:
        (run.path / "model").mkdir()
        (run.path / "model" / "config.json").write_text("{not json")
        with caplog.at_level(logging.WARNING, logger="adaptlab"):
            run.finish({"ok": True}, "broken")
    assert run.finished and json.loads(run.metrics.read_text()) == {"ok": True}
    assert not (run.path / "model" / "README.md").exists()
    assert "no model card in" in caplog.text and "JSONDecodeError" in caplog.text


@pytest.mark.parametrize("config_text", ["a: '```'\n", "b: '````x'\n"])
def test_the_config_block_survives_backticks_in_the_config(config_text):
    from adaptlab.models.card_results import fenced

    block = fenced("yaml", config_text)
    fence = block.split("yaml", 1)[0]
    assert block.endswith("\n" + fence) and fence not in config_text


def test_a_gguf_import_gets_a_card_that_loads_it(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    from adaptlab.models.gguf import import_gguf
    from gguf_files import write_tiny_gguf

    monkeypatch.setenv("ADAPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    source = write_tiny_gguf(tmp_path / "tiny.gguf", tensor_type="F32")
    directory = import_gguf(source, tmp_path / "imported")
    front, body = read_card(directory)
    assert (front["library_name"], front["pipeline_tag"]) == ("transformers", "text-generation")
    assert f"{source} converted from GGUF to a float32 HF model" in body
    assert "## Resolved config" not in body and "metrics.json" not in body
    assert "apply_chat_template" in section(body, "How to load it")
    assert run_load_snippet(directory).endswith("\n")
