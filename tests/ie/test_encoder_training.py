"""The NER and RE students on the training layer: ``training:`` in the HF Trainer's names (old keys refused in one
line), ``trainer_args`` / ``run_name`` / ``report_to`` reaching the Trainer, top-level ``max_length``, the
``strategy:`` block and what it leaves in metrics.json."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_ner_cli import FAST, synthetic_records

from adaptlab.config import load_config
from adaptlab.data.records import write_records
from adaptlab.errors import ConfigError
from adaptlab.recipes.ner import NERTrainConfig
from adaptlab.recipes.relations import RETrainConfig
from adaptlab.tuning import encoder_fit
from adaptlab.tuning.encoder_fit import encoder_training_arguments


@pytest.mark.parametrize("command", ["ner", "re"])
@pytest.mark.parametrize("override, needles", [
    ("training.epochs=3", ["training", "'epochs' is now 'num_train_epochs'"]),
    ("training.batch_size=8", ["training", "'batch_size' is now 'per_device_train_batch_size'"]),
    ("training.eval_batch_size=8", ["training", "'eval_batch_size' is now 'per_device_eval_batch_size'"]),
    ("training.scheduler=cosine", ["training", "'scheduler' is now 'lr_scheduler_type'"]),
    ("training.max_length=128", ["top-level max_length", "not training.max_length"]),
    ("strategy.nonesuch={}", ["unknown key 'strategy.nonesuch'"]),
])
def test_an_old_or_unknown_key_is_one_line_with_exit_2(command, override, needles, tmp_path, tiny_bert_dir, run_cli):
    write_records(synthetic_records(8, 0), tmp_path / "train.jsonl")
    code, out, err = run_cli(command, "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                             "--output", tmp_path / "run", override)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: invalid config: ")
    for needle in needles:
        assert needle in err
    assert "Traceback" not in out + err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", [NERTrainConfig, RETrainConfig])
def test_max_length_is_top_level_and_an_empty_strategy_block_is_accepted(model, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_length: 64\nstrategy: {}\ntraining: {seed: 3}\n")
    cfg = load_config(model, path)
    assert cfg.max_length == 64 and cfg.training.seed == 3
    assert cfg.strategy.model_dump(exclude_none=True) == {}
    with pytest.raises(ConfigError, match=r"max_length: Input should be greater than or equal to 8"):
        load_config(model, None, ["max_length=4"])


def test_re_training_keeps_its_defaults_when_one_key_is_set():
    cfg = load_config(RETrainConfig, None, ["training.seed=3"])
    assert (cfg.training.learning_rate, cfg.training.num_train_epochs, cfg.training.early_stopping_patience) == (
        5e-5, 5, 2)
    ner = load_config(NERTrainConfig, None, ["training.seed=3"])
    assert (ner.training.learning_rate, ner.training.num_train_epochs) == (1e-4, 20)


def test_report_to_and_run_name_reach_the_training_arguments(tmp_path):
    cfg = load_config(NERTrainConfig, None, ["training.report_to=tensorboard", "training.run_name=exp-7",
                                             "training.trainer_args={label_smoothing_factor: 0.1}"])
    args = encoder_training_arguments(cfg.training, tmp_path, has_eval=True, metric="macro_f1")
    assert args.report_to == ["tensorboard"] and args.run_name == "exp-7"
    assert args.label_smoothing_factor == 0.1
    assert (args.eval_strategy, args.metric_for_best_model, args.load_best_model_at_end) == ("epoch", "macro_f1", True)


@pytest.fixture
def recorded_trainer(monkeypatch):
    """What the student's Trainer was built with and which optimizer it trained with."""
    seen: dict = {}

    class RecordingTrainer(encoder_fit.StrategyTrainer):
        def train(self, *args, **kwargs):
            result = super().train(*args, **kwargs)
            seen["args"] = self.args
            seen["optimizer"] = getattr(self.optimizer, "optimizer", self.optimizer)  # under accelerate's wrapper
            return result

    monkeypatch.setattr(encoder_fit, "StrategyTrainer", RecordingTrainer)
    return seen


def test_ner_trainer_args_and_max_length_reach_the_trainer(recorded_trainer, tmp_path, tiny_bert_dir, run_cli):
    write_records(synthetic_records(24, 0), tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "--epochs", "1", "max_length=8",
                           "training.trainer_args={optim: sgd}", "training.run_name=exp-7", "strategy={}", *FAST)
    assert code == 0, err
    assert type(recorded_trainer["optimizer"]) is torch.optim.SGD
    assert recorded_trainer["args"].optim == "sgd" and recorded_trainer["args"].run_name == "exp-7"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategies"] == {}
    assert metrics["truncated_records"] > 0  # 4 to 9 words do not fit 8 subwords with [CLS] and [SEP]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["max_length"] == 8 and saved["training"]["trainer_args"] == {"optim": "sgd"}


def test_re_trainer_args_reach_the_trainer(recorded_trainer, tmp_path, tiny_bert_dir, run_cli):
    from test_relations_extract import DEMO

    code, _, err = run_cli("re", "train", "--train", DEMO / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "--epochs", "1", "training.trainer_args={optim: sgd}",
                           "dev_fraction=0.15", *FAST)  # 24 of the 163 records: a dev set (>= 20) to choose on
    assert code == 0, err
    assert type(recorded_trainer["optimizer"]) is torch.optim.SGD
    assert recorded_trainer["args"].metric_for_best_model == "weighted_f1"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["strategies"] == {}
