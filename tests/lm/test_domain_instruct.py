"""``adaptlab domain-instruct``: CPT -> chat vector (with λ search) -> four-model evaluation, resumable."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import WORDS, save_tiny_llama, sentences, write_prepared_corpus
from transformers import AutoModelForCausalLM

from adaptlab.config import validate_config
from adaptlab.errors import AdaptlabError, ConfigError, RunDirError
from adaptlab.recipes.domain_instruct import DomainInstructConfig, run


@pytest.fixture
def models(tmp_path):
    """A tiny base, an 'instruct' model (the base with a small weight delta) and a prepared corpus."""
    base = save_tiny_llama(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    instruct = tmp_path / "instruct"
    model.save_pretrained(instruct)
    (instruct / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).exists():
            (instruct / name).write_bytes((base / name).read_bytes())
    corpus = write_prepared_corpus(tmp_path / "corpus", base)
    return base, instruct, corpus


def recipe_config(base, instruct, corpus, output, **extra) -> dict:
    task = corpus.parent / "quiz.jsonl"
    task.write_text("\n".join(json.dumps({"question": f"{w} or {WORDS[i + 1]}", "choices": [w, WORDS[i + 1]],
                                          "answer": 0}) for i, w in enumerate(WORDS[:4])) + "\n")
    prompts = corpus.parent / "probe.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": s}) for s in sentences(2, 9, 4)) + "\n")
    return {"base": str(base), "instruct": str(instruct), "corpus": str(corpus), "output": str(output),
            "train": {"save_steps": 2, "eval_steps": 2,
                      "training": {"max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 3e-3,
                                   "warmup_steps": 1, "logging_steps": 1, "progress": False}},
            "merge": {"search": [0.5, 1.0], "max_length": 64},
            "evaluate": {"mc": {"tasks": {"quiz": str(task)}}, "perplexity": {"max_length": 64},
                         "probe": {"prompts": str(prompts), "max_new_tokens": 4}, "progress": False},
            **extra}


def test_recipe_runs_every_stage_and_continues_an_interrupted_run(models, tmp_path):
    base, instruct, corpus = models
    cfg = validate_config(DomainInstructConfig, recipe_config(base, instruct, corpus, tmp_path / "run"))
    run_dir, metrics = run(cfg)
    assert [row["model"] for row in metrics["table"]] == ["base", "instruct", "domain", "merged"]
    row = metrics["table"][0]
    assert {"ppl_domain", "ppl_general", "quiz_acc", "probe_both"} <= set(row)
    assert metrics["merge"]["scale"] in (0.5, 1.0) and len(metrics["merge"]["search"]) == 2
    assert (run_dir.path / "cpt" / "model" / "config.json").is_file()
    assert (run_dir.path / "merged" / "config.json").is_file()
    domain_ppl = {r["model"]: r["ppl_domain"] for r in metrics["table"]}
    assert domain_ppl["domain"] < domain_ppl["base"]  # continual pretraining fits the domain text
    report = run_dir.report.read_text()
    assert "λ search" in report and "data:image/png;base64" in report

    # an interrupted run: evaluation lost; the same config and output continue without retraining or re-merging
    for stage in ("evaluate", "metrics.json", "report.html"):
        target = run_dir.path / stage
        target.unlink() if target.is_file() else __import__("shutil").rmtree(target)
    cpt_mtime = (run_dir.path / "cpt" / "model" / "model.safetensors").stat().st_mtime_ns
    _, again = run(cfg)
    assert (run_dir.path / "cpt" / "model" / "model.safetensors").stat().st_mtime_ns == cpt_mtime
    assert again["table"] == metrics["table"]

    # a later stage's settings changed: continual pretraining is reused, the merge is done again
    changed = recipe_config(base, instruct, corpus, tmp_path / "run", merge={"scale": 0.25})
    _, third = run(validate_config(DomainInstructConfig, changed))
    assert (run_dir.path / "cpt" / "model" / "model.safetensors").stat().st_mtime_ns == cpt_mtime
    assert third["merge"] == {"scale": 0.25, "search": None}
    # continual-pretraining settings changed: that run cannot be continued
    other_training = recipe_config(base, instruct, corpus, tmp_path / "run")
    other_training["train"]["training"]["learning_rate"] = 1e-3
    with pytest.raises(RunDirError, match="continual pretraining was made with other train"):
        run(validate_config(DomainInstructConfig, other_training))


def test_every_stage_input_is_checked_before_continual_pretraining(models, tmp_path, tiny_llama, tokenizer):
    base, instruct, corpus = models
    other = tmp_path / "other-shape"
    tiny_llama().save_pretrained(other)  # another vocabulary and shapes than base
    tokenizer.save_pretrained(other)
    with pytest.raises(AdaptlabError, match="base and instruct cannot be merged by the chat vector"):
        run(validate_config(DomainInstructConfig, recipe_config(base, other, corpus, tmp_path / "a")))
    bad_task = recipe_config(base, instruct, corpus, tmp_path / "b")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 3}\n')
    bad_task["evaluate"]["mc"]["tasks"] = {"bad": str(tmp_path / "bad.jsonl")}
    with pytest.raises(AdaptlabError, match="bad.jsonl:1"):
        run(validate_config(DomainInstructConfig, bad_task))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_recipe_refuses_keys_it_sets_and_foreign_outputs(models, tmp_path):
    base, instruct, corpus = models
    bad = recipe_config(base, instruct, corpus, tmp_path / "run")
    bad["train"]["model"] = str(base)
    with pytest.raises(ConfigError, match="train.model is set by the domain-instruct recipe"):
        run(validate_config(DomainInstructConfig, bad))
    with pytest.raises(ConfigError, match="no held-out domain text"):
        run(validate_config(DomainInstructConfig, recipe_config(base, instruct, tmp_path, tmp_path / "r")))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no domain-instruct run"):
        run(validate_config(DomainInstructConfig, recipe_config(base, instruct, corpus, occupied)))
    assert (occupied / "notes.txt").read_text() == "mine"
