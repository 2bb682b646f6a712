"""``adaptlab ner train`` stopped by real signals: exit code, nothing left at --output, and the rerun works."""

from __future__ import annotations

import signal

import pytest
from test_ner_cli import FAST, synthetic_records

from adaptlab.data.records import write_records
from pause_driver import stopped_at


@pytest.mark.parametrize("where, signum, code", [
    ("transformers:Trainer.train", signal.SIGINT, 130),  # the run directory holds only config.yaml and log.txt
    ("adaptlab.recipes.ner:collapse_warning", signal.SIGTERM, 143),  # trained and saved, not yet checked
])
def test_ner_train_stopped_leaves_nothing_and_runs_again(where, signum, code, tmp_path, tiny_bert_dir, run_cli):
    write_records(synthetic_records(24, 0), tmp_path / "train.jsonl")
    args = ["ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir, "--output",
            tmp_path / "run", "--epochs", "1", *FAST]
    exit_code, err = stopped_at(where, args, tmp_path, signum)
    assert exit_code == code, err
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
    assert "removed the unfinished run directory" in err and not (tmp_path / "run").exists()
    exit_code, _, err = run_cli(*args)
    assert exit_code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()
