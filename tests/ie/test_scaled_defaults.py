"""Encoder defaults that scale with the data: a minimum step budget, dev evaluated every few steps when epochs are
one step long, early stopping never before the budget, no dev set too small to mean anything, and a warning when
the trained student has collapsed (the issue: 16 sentences trained 6 steps and gave a useless model, exit 0)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_ner_cli import synthetic_records
from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

from adaptlab.data.records import write_records
from adaptlab.data.splits import MIN_DEV_RECORDS, hold_out_dev
from adaptlab.errors import ConfigError
from adaptlab.tuning.encoder_fit import (
    EarlyStoppingFrom,
    EncoderTrainerSettings,
    encoder_training_arguments,
    plan_training,
    unlearnt_labels_warning,
)

FAST = ["training.progress=false", "training.min_steps=30"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("rows, settings, has_eval, expected", [
    # 14 sentences, batch 16: one step an epoch; 20 epochs would be 20 steps, min_steps makes it 200
    (14, {}, False, {"steps_per_epoch": 1, "steps": 200, "epochs": 200.0, "extended": True, "eval_every": 0,
                     "early_stopping_patience": None, "early_stopping_from": 200}),
    # the same with a dev file: evaluated every 200/20 = 10 steps, not every 1-step epoch
    (14, {}, True, {"steps": 200, "eval_every": 10, "eval_per_epoch": False, "early_stopping_patience": 5,
                    "early_stopping_from": 200}),
    # full biospecies training split (274): 18 steps an epoch, 15 epochs = 270 >= 200, evaluated each epoch
    (274, {"num_train_epochs": 15}, True, {"steps_per_epoch": 18, "steps": 270, "extended": False,
                                           "eval_every": 18, "eval_per_epoch": True, "early_stopping_from": 200}),
    # an explicit max_steps is obeyed, and early stopping may act from its end at the latest
    (14, {"max_steps": 50}, True, {"steps": 50, "extended": False, "early_stopping_from": 50}),
    # min_steps 0: num_train_epochs alone, evaluated each epoch (the old behaviour)
    (14, {"min_steps": 0}, True, {"steps": 20, "extended": False, "eval_every": 1, "eval_per_epoch": True,
                                  "early_stopping_from": 0}),
    # 100 rows in batches of 4 = 25 batches, 4 accumulated per step: 7 optimizer steps an epoch
    (100, {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "num_train_epochs": 2.5}, False,
     {"steps_per_epoch": 7, "steps": 200, "extended": True}),
])
def test_the_plan_scales_with_the_data(rows, settings, has_eval, expected):
    plan = plan_training(EncoderTrainerSettings(**settings), rows, has_eval).to_json()
    assert {key: plan[key] for key in expected} == expected


def test_a_sampler_s_epoch_counts_its_batches_not_the_rows():
    """Multi-task sampling decides an epoch's batches (``epoch_batches``); the processes share them out."""
    one = plan_training(EncoderTrainerSettings(num_train_epochs=5), 62, True, epoch_batches=10).to_json()
    assert {k: one[k] for k in ("steps_per_epoch", "steps", "extended", "eval_every")} == {
        "steps_per_epoch": 10, "steps": 200, "extended": True, "eval_every": 10}
    assert plan_training(EncoderTrainerSettings(), 62, True, world_size=2, epoch_batches=9).steps_per_epoch == 5


def test_the_plan_reaches_the_training_arguments(tmp_path):
    cfg = EncoderTrainerSettings()
    args = encoder_training_arguments(cfg, tmp_path, True, "macro_f1", plan_training(cfg, 14, True))
    assert (args.max_steps, args.eval_strategy, args.eval_steps, args.save_strategy, args.save_steps) == (
        200, "steps", 10, "steps", 10)
    long = plan_training(cfg, 800, True)  # 50 steps an epoch x 20: epochs decide, evaluated each epoch
    args = encoder_training_arguments(cfg, tmp_path, True, "macro_f1", long)
    assert (args.max_steps, args.num_train_epochs, args.eval_strategy) == (-1, 20, "epoch")


def test_early_stopping_waits_for_the_minimum_budget():
    """Dev F1 0 through warm-up stops HF's callback after `patience` evaluations; ours waits until step 200."""
    args = SimpleNamespace(metric_for_best_model="macro_f1", greater_is_better=True)

    def stops_at(callback) -> int | None:
        state = TrainerState(best_metric=0.0)
        for step in range(10, 301, 10):
            state.global_step, control = step, TrainerControl()
            callback.on_evaluate(args, state, control, {"eval_macro_f1": 0.0})
            if control.should_training_stop:
                return step
        return None

    assert stops_at(EarlyStoppingCallback(early_stopping_patience=5)) == 50
    assert stops_at(EarlyStoppingFrom(5, not_before=200)) == 200


def test_no_dev_set_below_the_minimum():
    records = synthetic_records(150, 0)
    train, dev, note = hold_out_dev(records, 0.1, 0, MIN_DEV_RECORDS)
    assert (len(train), len(dev)) == (150, 0)
    assert note.startswith("no dev set held out: dev_fraction=0.1 of 150 records would be 15, fewer than the 20")
    train, dev, note = hold_out_dev(records, 0.2, 0, MIN_DEV_RECORDS)
    assert (len(train), len(dev), note) == (120, 30, None)
    assert hold_out_dev(records, 0, 0, MIN_DEV_RECORDS) == (records, [], None)
    with pytest.raises(ConfigError, match="dev_fraction=0.99 holds out all 30 records"):
        hold_out_dev(records[:30], 0.99, 0, 1)


def test_collapse_warnings_name_what_is_missing():
    gold = ["SPECIES"] * 5 + ["HABITAT"] * 3
    assert unlearnt_labels_warning(gold, gold[:6], "entity", 4) is None
    assert unlearnt_labels_warning(gold, [], "entity", 4).startswith(
        "degenerate model: it predicts no entity at all on 4 of its own training rows, where the annotation has 8")
    assert "it predicts only 'a' on 10" in unlearnt_labels_warning(["a", "b", "c"], ["a"] * 10, "label", 10)
    gold += ["FEEDING"] * 2
    assert "never predicts FEEDING (2), HABITAT (3) on 4" in unlearnt_labels_warning(gold, ["SPECIES", "BREEDING"],
                                                                                      "entity", 4)


def test_sixteen_sentences_train_the_step_budget_on_everything(tmp_path, tiny_bert_dir, run_cli):
    """12 records: no 1-record dev set, all 12 trained for min_steps (30 here) steps, not 20 one-step epochs."""
    write_records(synthetic_records(12, 0), tmp_path / "train.jsonl")
    code, out, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                             "--output", tmp_path / "run", "--lr", "3e-3", *FAST)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["train_records"], metrics["dev_records"], "dev" in metrics) == (12, 0, False)
    plan = metrics["training_plan"]
    assert (plan["steps"], plan["trained_steps"], plan["eval_every"], plan["extended"]) == (30, 30, 0, True)
    assert [note[:30] for note in metrics["notes"]] == ["no dev set held out: dev_fract",
                                                        "12 training rows make 1 optimi"]
    assert "note: no dev set held out" in " ".join(out.split())
    assert "training runs min_steps=30 steps instead (30 epochs)" in (tmp_path / "run" / "log.txt").read_text()
    assert "Training notes" in (tmp_path / "run" / "report.html").read_text()


def test_a_collapsed_student_is_a_warning_not_a_failure(tmp_path, tiny_bert_dir, run_cli):
    """A rate of 0.3 drives the tiny student to tag everything O: exit 0, but the log, metrics.json, the report
    and the console say so."""
    write_records(synthetic_records(12, 0), tmp_path / "train.jsonl")
    code, out, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                             "--output", tmp_path / "run", "--lr", "0.3", *FAST)
    assert code == 0, err
    run = tmp_path / "run"
    (warning,) = json.loads((run / "metrics.json").read_text())["warnings"]
    assert warning.startswith("degenerate model: it predicts no entity at all on 12 of its own training rows")
    assert "WARNING" in (run / "log.txt").read_text() and "Warnings" in (run / "report.html").read_text()
    assert "warning: degenerate model" in " ".join(out.split())


def test_min_steps_is_validated_with_its_key(tmp_path, tiny_bert_dir, run_cli):
    write_records(synthetic_records(12, 0), tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "training.min_steps=-5")
    assert code == 2 and "training.min_steps" in err and not (tmp_path / "run").exists()
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "dev_fraction=0.99", "training.min_steps=1")
    assert code == 2 and "dev_fraction=0.99 holds out all 12 records" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
