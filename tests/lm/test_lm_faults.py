"""``adaptlab lm prepare`` and ``lm train`` stopped by real signals: exit codes, what stays, and the rerun."""

from __future__ import annotations

import json
import signal

import pytest
import yaml
from test_prepare import write_corpora
from train_helpers import save_tiny_llama, train_config, write_prepared_corpus

from pause_driver import stopped_at


def test_lm_prepare_stopped_while_packing_leaves_nothing(tmp_path, tokenizer_dir, run_cli):
    write_corpora(tmp_path)
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({
        "tokenizer": str(tokenizer_dir), "block_size": 32, "eval_documents": 3, "cache_dir": "cache",
        "progress": False, "sources": [{"name": "news", "path": "general.txt", "role": "general"},
                                       {"name": "finance", "path": "domain.jsonl", "role": "domain"}]}))
    args = ["lm", "prepare", config, "--output", tmp_path / "corpus"]
    code, err = stopped_at("adaptlab.lm.prepared:pack_split", args, tmp_path, signal.SIGTERM)
    assert code == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert not (tmp_path / "corpus").exists()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert (tmp_path / "corpus" / "data" / "manifest.json").is_file()


@pytest.mark.parametrize("where, signum, code, resumed", [
    ("adaptlab.lm.checkpoints:rotate_checkpoints", signal.SIGINT, 130, "checkpoint-2"),  # one checkpoint is complete
    ("transformers:Trainer.train", signal.SIGTERM, 143, None),  # no checkpoint yet
])
def test_lm_train_stopped_keeps_its_run_and_the_same_command_resumes(where, signum, code, resumed, tmp_path,
                                                                     run_cli):
    model = save_tiny_llama(tmp_path / "model")
    corpus = write_prepared_corpus(tmp_path / "corpus", model)
    config = tmp_path / "cpt.yaml"
    config.write_text(yaml.safe_dump(train_config(model, corpus, tmp_path / "run")))
    args = ["lm", "train", config, "--output", tmp_path / "run"]
    exit_code, err = stopped_at(where, args, tmp_path, signum)
    assert exit_code == code, err
    message = " ".join(err.split())
    assert f"kept {tmp_path / 'run'}: run the same command with --output {tmp_path / 'run'} resume=auto" in message
    assert (tmp_path / "run" / "config.yaml").is_file() and not (tmp_path / "run" / "model").exists()
    exit_code, _, err = run_cli(*args)
    assert exit_code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 8
    assert (metrics["resumed_from"] or "").endswith(resumed or "") and bool(metrics["resumed_from"]) == bool(resumed)
