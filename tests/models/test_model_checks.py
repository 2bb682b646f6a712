"""Damaged, missing and wrong-kind models: every command that takes a model says which file or mismatch, in
one line with exit 2, before it writes anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adaptlab.data.records import Record, Span, write_records

NER_LABELS = {0: "O", 1: "B-ANIMAL", 2: "I-ANIMAL"}
RE_LABELS = {0: "no_relation", 1: "live_in"}


def save_tiny(path: Path, model_class, tokenizer_dir: Path, **config) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig

    torch.manual_seed(0)
    model_class(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, **config)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer_dir, tiny_llama, tokenizer) -> dict[str, Path]:
    from transformers import BertForSequenceClassification, BertForTokenClassification, BertModel

    root = tmp_path_factory.mktemp("kinds")
    llama = root / "llama"
    tiny_llama().save_pretrained(llama)
    tokenizer.save_pretrained(llama)
    return {
        "ner": save_tiny(root / "ner", BertForTokenClassification, tokenizer_dir, id2label=NER_LABELS,
                         label2id={v: k for k, v in NER_LABELS.items()}),
        "re": save_tiny(root / "re", BertForSequenceClassification, tokenizer_dir, id2label=RE_LABELS,
                        label2id={v: k for k, v in RE_LABELS.items()}),
        "encoder": save_tiny(root / "encoder", BertModel, tokenizer_dir),
        "llama": llama,
    }


def damage(source: Path, target: Path, how: str) -> tuple[Path, str]:
    """A damaged copy of ``source`` and the words its error must contain."""
    if how == "missing":
        return target / "nope", "does not exist"
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    if how == "a file":
        return weights, "is a file"
    if how == "empty weights":
        weights.write_bytes(b"")
        return target, "model.safetensors: not a readable safetensors file"
    if how == "truncated weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return target, "lies outside the file (truncated download?)"
    if how == "no weights":
        weights.unlink()
        return target, "no weights found"
    if how == "bad config":
        (target / "config.json").write_text("{not json")
        return target, "config.json is not valid JSON"
    if how == "config without model_type":
        (target / "config.json").write_text(json.dumps({"hidden_size": 16}))
        return target, "names no model_type"
    raise ValueError(how)


DAMAGE = ["missing", "a file", "empty weights", "truncated weights", "no weights", "bad config",
          "config without model_type"]


def data_files(folder: Path) -> dict[str, Path]:
    write_records([Record("the Zorbfish lives", [Span(4, 12, "ANIMAL")])] * 4, folder / "ner.jsonl")
    (folder / "text.txt").write_text("domain text to score\n")
    (folder / "re.csv").write_text("sentence,label\n[E1]Zorbfish[/E1] lives in [E2]lakes[/E2],live_in\n")
    return {"ner": folder / "ner.jsonl", "text": folder / "text.txt", "re": folder / "re.csv"}


def command(kind: str, model: Path, files: dict[str, Path], output: Path) -> list:
    if kind == "ner train":
        return ["ner", "train", "--train", files["ner"], "--model", model, "--output", output, "--epochs", "1"]
    if kind == "ner evaluate":
        return ["ner", "evaluate", "--model", model, "--data", files["ner"], "--output", output]
    if kind == "ner predict":
        return ["ner", "predict", "--model", model, "--text", "the Zorbfish"]
    if kind == "re evaluate":
        return ["re", "evaluate", "--model", model, "--data", files["re"]]
    if kind == "extract":
        return ["extract", "--ner", model, "--schema", "biospecies", "--text", "the Zorbfish", "--output", output]
    if kind == "re predict":
        return ["re", "predict", "--model", model, "--text", "[E1]Zorbfish[/E1] in [E2]lakes[/E2]"]
    if kind == "lm train":
        config = output.parent / "cpt.json"  # YAML reads JSON
        config.write_text(json.dumps({"mode": "cpt", "model": str(model), "data": str(output.parent / "corpus")}))
        return ["lm", "train", config, "--output", output]
    if kind == "lm evaluate":
        return ["lm", "evaluate", f"models=[{{name: m, path: {model}}}]", f"perplexity.texts={{t: {files['text']}}}",
                "--output", output]
    raise ValueError(kind)


SOURCE = {"ner train": "encoder", "ner evaluate": "ner", "ner predict": "ner", "re predict": "re",
          "re evaluate": "re", "extract": "ner", "lm evaluate": "llama", "lm train": "llama"}


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", list(SOURCE))
def test_a_damaged_model_is_one_line_with_exit_2(kind, how, models, tmp_path, run_cli):
    model, words = damage(models[SOURCE[kind]], tmp_path / "model", how)
    code, out, err = run_cli(*command(kind, model, data_files(tmp_path), tmp_path / "out"))
    assert code == 2, err
    assert words in " ".join(err.split()) and "Traceback" not in out + err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, source, words", [
    ("ner evaluate", "re", "is a BertForSequenceClassification, not a token classifier"),
    ("ner predict", "encoder", "is a BertModel, not a token classifier"),
    ("re predict", "ner", "is a BertForTokenClassification, not a sequence classifier"),
    ("lm evaluate", "encoder", "is a BertModel, not a causal language model"),
])
def test_the_wrong_kind_of_model_is_refused(kind, source, words, models, tmp_path, run_cli):
    code, out, err = run_cli(*command(kind, models[source], data_files(tmp_path), tmp_path / "out"))
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in out + err
    assert not (tmp_path / "out").exists()


def test_extract_with_an_ner_model_as_relation_model_is_refused(models, tmp_path, run_cli):
    code, _, err = run_cli("extract", "--ner", models["ner"], "--re", models["ner"], "--schema", "biospecies",
                           "--text", "the Zorbfish")
    assert code == 2 and "not a sequence classifier" in " ".join(err.split())


def test_a_token_classifier_without_ner_tags_is_refused(models, tmp_path, run_cli, tokenizer_dir):
    from transformers import BertForTokenClassification

    pos = save_tiny(tmp_path / "pos", BertForTokenClassification, tokenizer_dir, id2label={0: "NOUN", 1: "VERB"},
                    label2id={"NOUN": 0, "VERB": 1})
    code, _, err = run_cli("ner", "predict", "--model", pos, "--text", "the Zorbfish")
    assert code == 2 and "not NER tags" in err


@pytest.mark.parametrize("how, words", [("truncated weights", "cannot be loaded as the head"),
                                        ("bad scorer.json", "scorer.json is damaged")])
def test_a_damaged_fractal_scorer_is_one_line_with_exit_2(how, words, tmp_path, run_cli):
    from adaptlab.fractal.model import SentenceScorer, save_scorer

    scorer = tmp_path / "scorer"
    save_scorer(SentenceScorer(feature_dim=1536, hidden=3), scorer, {"feature_model": "minilm"})
    if how == "truncated weights":
        data = (scorer / "scorer.safetensors").read_bytes()
        (scorer / "scorer.safetensors").write_bytes(data[:40])
    else:
        (scorer / "scorer.json").write_text("{")
    (tmp_path / "bags.jsonl").write_text(json.dumps({"id": "a", "context": "q", "response": "One. Two.", "label": 1})
                                         + "\n")
    code, out, err = run_cli("fractal", "score", "--model", scorer, "--input", tmp_path / "bags.jsonl", "--output",
                             tmp_path / "scores.jsonl")
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in out + err
    assert not (tmp_path / "scores.jsonl").exists()


def test_re_evaluate_with_relation_labels_the_model_does_not_know_is_exit_2(models, tmp_path, run_cli):
    data = tmp_path / "re.csv"
    data.write_text('"Sentence","Label"\n"[E1]Toads[/E1] eat [E2]beetles[/E2]","feed_on"\n'
                    '"[E1]Frogs[/E1] live in [E2]ponds[/E2]","live_in"\n')
    code, out, err = run_cli("re", "evaluate", "--model", models["re"], "--data", data)
    assert code == 2 and "Traceback" not in out + err
    assert "relation labels ['feed_on'] that the model does not know" in " ".join(err.split())
