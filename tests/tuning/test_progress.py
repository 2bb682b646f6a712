"""The training console: one rich bar per stage with loss and evaluation metric, the Trainer's log dicts in
``log.txt`` and never on stdout/stderr, nothing at all under ``adaptlab -q``, and the distillation demo's console
in few lines."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from adaptlab import runs
from adaptlab.data.records import write_records
from adaptlab.tuning.progress import TrainingProgress, eval_metric_key
from adaptlab.tuning.trainer import stage_name
from zorb_records import zorb_records

TINY_NER = ["training.per_device_eval_batch_size=64", "training.min_steps=0", "training.logging_steps=2",
            "--epochs", "4", "--lr", "3e-3"]


@pytest.fixture(autouse=True)
def _console_back_to_default():
    yield
    runs.configure_console()


def _callback_run(metric: str | None, logs: list[dict], capsys, last_step: int = 10) -> tuple[TrainingProgress, str]:
    """Drive the callback as the Trainer would over 10 steps (ending at ``last_step``), the ``logs`` at step 5;
    returns (callback, stderr)."""
    callback = TrainingProgress("NER student")
    args, state, control = SimpleNamespace(metric_for_best_model=metric), TrainerState(max_steps=10), TrainerControl()
    callback.on_train_begin(args, state, control)
    state.global_step = 5
    callback.on_step_end(args, state, control)
    for entry in logs:
        callback.on_log(args, state, control, logs=entry)
    task = callback.bar.tasks[0]
    assert (task.completed, task.total, task.description) == (5, 10, "NER student")
    state.global_step = last_step
    callback.on_train_end(args, state, control)
    assert callback.bar is None
    return callback, capsys.readouterr().err


def test_the_bar_shows_the_newest_loss_and_the_selection_metric(capsys, caplog):
    logs = [{"loss": 0.9, "grad_norm": 2.0, "learning_rate": 1e-4, "epoch": 1.0},
            {"eval_loss": 0.7, "eval_f1": 0.5, "epoch": 1.0},
            {"loss": 0.41234, "grad_norm": 1.5, "learning_rate": 5e-5, "epoch": 2.0},
            {"eval_loss": 0.3, "eval_f1": 0.8125, "epoch": 2.0}]
    with caplog.at_level(logging.INFO, logger="adaptlab"):
        callback, err = _callback_run("f1", logs, capsys)
    assert callback.shown == {"loss": "0.4123", "eval_f1": "0.8125"}
    # not a terminal: the finished bar is printed once, one line
    assert err.count("\n") == 1 and "NER student" in err and "10/10" in err
    assert "loss 0.4123  eval_f1 0.8125" in err
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "NER student step 5/10: loss 0.9, grad_norm 2, learning_rate 0.0001, epoch 1"
    assert lines[3] == "NER student step 5/10: eval_loss 0.3, eval_f1 0.8125, epoch 2"


def test_without_a_selection_metric_the_bar_shows_the_evaluation_loss(capsys):
    callback, _ = _callback_run(None, [{"eval_loss": 0.25, "eval_perplexity": 1.3}, {"loss": 0.5}], capsys)
    assert callback.shown == {"eval_loss": "0.25", "loss": "0.5"}
    callback, err = _callback_run(None, [{"eval_domain_loss": 2.5, "eval_general_loss": 3.0}], capsys)
    assert callback.shown == {"eval_domain_loss": "2.5"} and "eval_domain_loss 2.5" in err
    assert eval_metric_key("eval_mean_f1") == "eval_mean_f1" and eval_metric_key("f1") == "eval_f1"


def test_a_run_that_early_stopping_ends_says_so(capsys):
    _, err = _callback_run("f1", [{"loss": 0.5}], capsys, last_step=7)
    assert "7/10" in err and "loss 0.5  stopped early" in err
    _, err = _callback_run("f1", [{"loss": 0.5}], capsys)
    assert "10/10" in err and "stopped early" not in err


def test_a_disabled_bar_draws_nothing_and_still_logs(capsys, caplog):
    callback = TrainingProgress("causal LM", enabled=False)
    args, state, control = SimpleNamespace(metric_for_best_model=None), TrainerState(max_steps=4), TrainerControl()
    with caplog.at_level(logging.INFO, logger="adaptlab"):
        callback.on_train_begin(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 1.5})
        callback.on_train_end(args, state, control)
    assert capsys.readouterr().err == ""
    assert "causal LM step 0/4: loss 1.5" in caplog.text


def test_stage_names_come_from_the_model_head():
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24)
    assert stage_name(BertForTokenClassification(config)) == "NER student"
    assert stage_name(BertForSequenceClassification(config)) == "classifier student"
    assert stage_name(BertForMaskedLM(config)) == "masked-LM"
    assert stage_name(BertForMaskedLM(config), causal=True) == "causal LM"


@pytest.fixture
def ner_data(tmp_path):
    animals, places = ["Zorbfish", "Zorbtoad"], ["lake", "lakeside"]
    write_records(zorb_records(32, 0, animals, places), tmp_path / "train.jsonl")
    write_records(zorb_records(24, 1, animals, places), tmp_path / "dev.jsonl")
    return ["--train", tmp_path / "train.jsonl", "--dev", tmp_path / "dev.jsonl"]


def test_training_prints_one_bar_and_logs_the_dicts_to_log_txt(ner_data, tiny_bert_dir, tmp_path, run_cli):
    code, out, err = run_cli("ner", "train", *ner_data, "--model", tiny_bert_dir, "--output", tmp_path / "run",
                             *TINY_NER)
    assert code == 0, err
    assert "{'" not in out + err and "\r" not in err  # no Trainer dict, no tqdm redraw
    bar = [line for line in err.splitlines() if line.startswith("NER student")]
    assert len(bar) == 1 and "8/8" in bar[0] and "loss " in bar[0] and "eval_macro_f1 " in bar[0], err
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("NER student step") >= 4 + 4  # a loss every 2 of 8 steps, an evaluation each of 4 epochs
    assert "NER student step 2/8: loss " in log and "eval_macro_f1" in log and "train_runtime" in log


def test_an_in_process_call_puts_transformers_logging_back(run_cli):
    """The CLI quietens an already imported transformers for the call only (the test above shows no loading
    report or bar); a Python caller's own settings are back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    try:
        assert run_cli("--version")[0] == 0
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(verbosity)
        if not bars:
            hf_logging.disable_progress_bar()


def test_quiet_leaves_no_bar(ner_data, tiny_bert_dir, tmp_path, run_cli):
    code, out, err = run_cli("-q", "ner", "train", *ner_data, "--model", tiny_bert_dir, "--output",
                             tmp_path / "run", *TINY_NER)
    assert code == 0, err
    assert "NER student" not in err and "━" not in err and "{'" not in out + err
    assert "NER student step 8/8" in (tmp_path / "run" / "log.txt").read_text()


def test_distill_demo_console_is_short(tmp_path, run_cli, monkeypatch):
    """The demo as ``make demo`` runs it, but its student trains 3 steps: stage lines, one bar, the results."""
    from adaptlab.recipes import distill
    from adaptlab.tuning.encoder_fit import EncoderTrainerSettings

    monkeypatch.setattr(distill, "demo_student_training", lambda epochs: EncoderTrainerSettings(
        max_steps=3, min_steps=0, per_device_train_batch_size=16, early_stopping_patience=None))
    code, out, err = run_cli("distill", "demo", "--output", tmp_path / "demo")
    assert code == 0, err
    lines = (out + err).splitlines()
    assert len(lines) <= 30, out + err
    assert [line[:5] for line in err.splitlines() if line.startswith("[")] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert sum(line.startswith("NER student") and "3/3" in line for line in lines) == 1
    assert any(line.startswith("teacher vs reviewers: strict span F1 0.") for line in lines)
    assert "{'" not in out + err and "Map" not in err and "\r" not in err
    assert f"run directory: {tmp_path / 'demo'}" in out
