"""Experiment tracking (``report_to``): checked at config validation, the Trainer's TensorBoard files kept in the
run directory (training stages included), and adaptlab's own metrics (strict F1, macro F1, a few-shot or FRACTAL
loop's losses) in the same event files, read back with TensorBoard's EventAccumulator; with MLflow, everything a
run logs after training in the training's own MLflow run (real MLflow when installed, else a stand-in)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from adaptlab.data.records import write_records
from adaptlab.tuning import tracking
from zorb_records import FILLERS, zorb_records

ANIMALS, PLACES = ["zorbfish", "zorbtoad"], ["lake", "lakeside"]
FAST = ["training.progress=false", "training.min_steps=0", "training.per_device_train_batch_size=8",
        "training.learning_rate=3e-3", "training.logging_steps=2"]
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard is not installed (pip install tensorboard; it is in the "
                                              "dev extra)")


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files of ``directory``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def trainer_arguments(directory: Path) -> dict:
    """The ``TrainingArguments`` the Trainer's TensorBoard callback wrote at the start of training."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return json.loads(events.Tensors("args/text_summary")[0].tensor_proto.string_val[0])


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory) -> Path:
    """A tiny random BERT whose WordPiece vocabulary is the Zorb task's words (fast steps)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("small-bert")
    words = [*FILLERS, *ANIMALS, *PLACES, "good", "bad", "film", "plot"]
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=64)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def ner_data(tmp_path: Path) -> list[str]:
    write_records(zorb_records(24, 0, ANIMALS, PLACES), tmp_path / "train.jsonl")
    write_records(zorb_records(12, 1, ANIMALS, PLACES), tmp_path / "dev.jsonl")
    return ["--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl")]


def train_fewshot_cls(small_bert: Path, tmp_path: Path, run_cli, report_to: str) -> None:
    """``cls train`` with strategy.fewshot (its own loop, no HF Trainer): 2 iterations x 2 x 8 pairs, 4 a step."""
    texts = {"pos": ["good film", "good plot", "good good film", "film good"],
             "neg": ["bad film", "bad plot", "bad bad film", "plot bad"]}
    lines = [f"{label} {text}\n" for label, group in texts.items() for text in group]
    (tmp_path / "train.txt").write_text("".join(lines))
    (tmp_path / "dev.txt").write_text("".join(lines[::2]))
    code, _, err = run_cli("cls", "train", "--train", tmp_path / "train.txt", "--dev", tmp_path / "dev.txt",
                           "--model", small_bert, "--output", tmp_path / "run", f"training.report_to={report_to}",
                           "training.progress=false", "strategy.fewshot.num_iterations=2",
                           "strategy.fewshot.batch_size=4", "strategy.fewshot.logging_steps=1",
                           "strategy.fewshot.progress=false")
    assert code == 0, err


# --------------------------------------------------------------------------------------------- validation


def test_unknown_backend_lists_the_known_ones_through_the_cli(small_bert, tmp_path, run_cli):
    code, out, err = run_cli("ner", "train", *ner_data(tmp_path), "--model", small_bert, "--output",
                             tmp_path / "run", "training.report_to=tensorbord", *FAST)
    assert code == 2 and "Traceback" not in out + err
    line = err.strip()
    assert "\n" not in line and "training.report_to: unknown backend 'tensorbord'" in line
    assert "known: none, all, " in line and "tensorboard" in line and "wandb" in line and "mlflow" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_a_backend_that_is_not_installed_names_the_pip_command(small_bert, tmp_path, run_cli, monkeypatch):
    installed = tracking._installed
    monkeypatch.setattr(tracking, "_installed", lambda module: module != "wandb" and installed(module))
    code, out, err = run_cli("ner", "train", *ner_data(tmp_path), "--model", small_bert, "--output",
                             tmp_path / "run", "training.report_to=[tensorboard, wandb]", *FAST)
    assert code == 2 and "Traceback" not in out + err and "\n" not in err.strip()
    assert ("training.report_to: 'wandb' needs the wandb package, which is not installed (pip install wandb)"
            in err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_fractal_train_checks_its_own_report_to(tmp_path, run_cli):
    (tmp_path / "bags.jsonl").write_text("")
    code, _, err = run_cli("fractal", "train", "--data", tmp_path / "bags.jsonl", "--output", tmp_path / "run",
                           "report_to=[none, tensorboard]")
    assert code == 2 and "report_to: 'none' cannot be combined with other backends" in err
    assert not (tmp_path / "run").exists()


def test_none_and_all_stand_alone_and_the_default_writes_nothing(tmp_path):
    assert tracking.check_report_to("none") == "none" and tracking.check_report_to("all") == "all"
    with pytest.raises(ValueError, match="'all' cannot be combined"):
        tracking.check_report_to(["all", "tensorboard"])
    tracking.log_final_metrics(SimpleNamespace(report_to="none", run_name=None), tmp_path / "run",
                               {"dev": {"f1": 0.5}}, 3)
    assert not (tmp_path / "run").exists()


def test_flat_numbers_keeps_finite_numbers_only():
    report = {"strict": {"micro": {"f1": 0.75, "support": 4}}, "labels": ["A"], "ok": True, "nan": math.nan,
              "confusion": {"matrix": [[1]]}}
    assert tracking.flat_numbers(report) == {"strict/micro/f1": 0.75, "strict/micro/support": 4}
    assert tracking.flat_numbers({"f1": 1.0}, "dev") == {"dev/f1": 1.0}


# --------------------------------------------------------------------------------------------- TensorBoard


@needs_tensorboard
def test_ner_train_writes_loss_and_strict_f1_to_tensorboard_in_the_run(small_bert, tmp_path, run_cli):
    """The Trainer's loss and eval curves, the TAPT stage's own loss, and the recipe's strict span F1 on dev."""
    code, _, err = run_cli("ner", "train", *ner_data(tmp_path), "--model", small_bert, "--output", tmp_path / "run",
                           "training.report_to=tensorboard", "training.max_steps=9", *FAST,
                           "strategy.domain.max_steps=4", "strategy.domain.save_steps=4",
                           "strategy.domain.per_device_train_batch_size=8")
    assert code == 0, err
    run = tmp_path / "run"
    assert not (run / "checkpoints").exists() and not (tmp_path / "runs").exists()  # nothing in the working dir
    logged = scalars(run / "tensorboard")
    losses = [value for _, value in logged["train/loss"]]
    assert len(losses) >= 4 and all(math.isfinite(v) and v > 0 for v in losses)
    assert logged["eval/loss"] and all(math.isfinite(v) for _, v in logged["eval/loss"])
    (step, f1), = logged["eval/dev/strict/micro/f1"]
    assert step == 9 and 0.0 <= f1 <= 1.0
    assert {"eval/dev/strict/macro/f1", "eval/dev/token/macro/f1", "eval/dev/counts/gold_spans"} <= set(logged)
    assert trainer_arguments(run / "tensorboard")["run_name"] == "run"  # default: the run directory's name
    report = json.loads((run / "metrics.json").read_text())["dev"]
    assert f1 == pytest.approx(report["strict"]["micro"]["f1"], abs=1e-6)  # the number the run reports
    stage = scalars(run / "domain" / "tensorboard")  # strategy.domain's masked-LM stage, with the task's trackers
    assert stage["train/loss"] and all(math.isfinite(v) for _, v in stage["train/loss"])


@needs_tensorboard
def test_fewshot_cls_logs_its_own_loop_and_macro_f1(small_bert, tmp_path, run_cli):
    """strategy.fewshot trains without the HF Trainer: its loss rows and the dev scores still reach the tracker."""
    train_fewshot_cls(small_bert, tmp_path, run_cli, "tensorboard")
    logged = scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4, 5, 6, 7, 8]  # 2 x 2 x 8 pairs, 4 per step
    assert all(math.isfinite(v) for _, v in logged["train/loss"])
    (step, macro_f1), = logged["eval/dev/macro_f1"]
    assert step == 8 and 0.0 <= macro_f1 <= 1.0


@needs_tensorboard
def test_fractal_train_logs_its_epochs_and_the_prior_mix(tmp_path, run_cli):
    from adaptlab.fractal.bags import Bag, write_bags

    facts = ["Water boils at 100 degrees Celsius.", "The Moon orbits the Earth."]
    noise = ["Have a nice day!", "Thanks for asking."]
    bags = [Bag(id=f"b{i}", context="Tell me a science fact.", offsets=None, group=f"q{i // 2}",
                sentences=[noise[i % 2]] + ([facts[i % 4 // 2]] if i % 2 == 0 else []), label=float(i % 2 == 0))
            for i in range(16)]
    write_bags(bags, tmp_path / "bags.jsonl")
    code, _, err = run_cli("fractal", "train", "--data", tmp_path / "bags.jsonl", "--output", tmp_path / "run",
                           f"cache_dir={tmp_path / 'cache'}", "train.epochs=5", "train.hidden=16",
                           "report_to=tensorboard", "run_name=fractal-test")
    assert code == 0, err
    logged = scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(v) for _, v in logged["train/loss"])
    (step, concordance), = logged["eval/prior_mix/held_out_concordance"]
    assert step == 5 and 0.0 <= concordance <= 1.0


# --------------------------------------------------------------------------------------------- MLflow


def test_mlflow_gets_one_run_with_the_final_evaluation_and_adaptlabs_scores(small_bert, tmp_path, run_cli,
                                                                            mlflow_runs):
    """MLflow's callback ends its run when training ends; the Trainer's final evaluation and the strict span F1
    computed after it still land in that run (not in new ones), and a TAPT stage has its own, named after it."""
    code, _, err = run_cli("ner", "train", *ner_data(tmp_path), "--model", small_bert, "--output", tmp_path / "run",
                           "training.report_to=mlflow", "training.max_steps=9", *FAST,
                           "strategy.domain.max_steps=4", "strategy.domain.save_steps=4",
                           "strategy.domain.per_device_train_batch_size=8")
    assert code == 0, err
    run, stage = mlflow_runs()
    assert (run["name"], stage["name"]) == ("run", "run/domain")  # and no third, randomly named run
    assert stage["status"] == run["status"] == "FINISHED"
    assert stage["metrics"]["loss"] and "eval_dev/strict/micro/f1" not in stage["metrics"]
    assert len(run["metrics"]["loss"]) >= 4
    evaluations = run["metrics"]["eval_loss"]
    assert len(evaluations) >= 2 and evaluations[-1][0] == 9  # during training, then the final one at step 9
    (step, f1), = run["metrics"]["eval_dev/strict/micro/f1"]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())["dev"]
    assert step == 9 and f1 == pytest.approx(report["strict"]["micro"]["f1"], abs=1e-6)


def test_mlflow_gets_one_run_for_a_loop_without_a_trainer(small_bert, tmp_path, run_cli, mlflow_runs):
    """strategy.fewshot logs its loop's losses, then the dev scores, in two goes: both in one MLflow run."""
    train_fewshot_cls(small_bert, tmp_path, run_cli, "mlflow")
    (run,) = mlflow_runs()
    assert run["name"] == "run" and run["status"] == "FINISHED"
    assert [step for step, _ in run["metrics"]["loss"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    (step, _), = run["metrics"]["eval_dev/macro_f1"]
    assert step == 8
