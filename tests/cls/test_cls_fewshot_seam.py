"""The seam for ``strategy.fewshot``: train calls ``train_fewshot`` with the agreed signature instead of the encoder
fit, and evaluate/predict load a directory holding ``fewshot_head.json`` with ``FewshotClassifier``.

The real modules are written elsewhere; fakes stand in for them here, so the contract is pinned either way.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from pydantic import create_model

from adaptlab.recipes import cls
from adaptlab.tuning.encoder_fit import FitResult
from adaptlab.tuning.strategies import StrategyBlock


class FakeFewshot:
    """Scores 'good' texts positive; the head file carries the labels, as a real few-shot model's would."""

    def __init__(self, labels: list[str], multi_label: bool):
        self.labels, self.multi_label = labels, multi_label

    @classmethod
    def load(cls, path):
        head = json.loads((Path(path) / "fewshot_head.json").read_text())
        return cls(head["labels"], head["multi_label"])

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        positive = np.array([0.9 if "good" in t else 0.2 for t in texts])
        return np.stack([1 - positive, positive], axis=1)


@pytest.fixture
def fake_modules(monkeypatch):
    calls = []

    def train_fewshot(train_texts, train_labels, labels, multi_label, model_path, config, seed, output_dir):
        calls.append({"train_texts": train_texts, "train_labels": train_labels, "labels": labels,
                      "multi_label": multi_label, "model_path": Path(model_path), "config": config, "seed": seed})
        model_dir = output_dir / "model"
        model_dir.mkdir(parents=True)
        (model_dir / "fewshot_head.json").write_text(json.dumps({"labels": labels, "multi_label": multi_label}))
        return FitResult(model_dir, [], {}, 0.5, {"fewshot": {"pairs": 8}})

    monkeypatch.setitem(sys.modules, "adaptlab.tuning.strategies.fewshot",
                        types.SimpleNamespace(train_fewshot=train_fewshot))
    monkeypatch.setitem(sys.modules, "adaptlab.tuning.fewshot_model",
                        types.SimpleNamespace(FewshotClassifier=FakeFewshot))
    return calls


def test_fewshot_block_trains_evaluates_and_predicts_through_the_seam(fake_modules, tmp_path):
    (tmp_path / "train.txt").write_text("pos good one\nneg bad one\npos good two\nneg bad two\n", encoding="utf-8")
    (tmp_path / "dev.txt").write_text("pos really good\nneg awful\n", encoding="utf-8")
    block = create_model("BlockWithFewshot", __base__=StrategyBlock, fewshot=(dict | None, None))
    cfg = cls.ClsTrainConfig(train=str(tmp_path / "train.txt"), dev=str(tmp_path / "dev.txt"),
                             output=str(tmp_path / "run"))
    cfg = cfg.model_copy(update={"strategy": block(fewshot={"body_epochs": 1})})
    run, metrics = cls.train(cfg)

    [call] = fake_modules
    assert call["train_texts"] == ["good one", "bad one", "good two", "bad two"]
    assert call["train_labels"] == [["pos"], ["neg"], ["pos"], ["neg"]]
    assert (call["labels"], call["multi_label"], call["seed"]) == (["neg", "pos"], False, 42)
    assert call["config"] == {"body_epochs": 1} and call["model_path"].name == "model"  # the packaged MiniLM
    assert metrics["dev"]["accuracy"] == 1.0 and metrics["strategies"] == {"fewshot": {"pairs": 8}}
    assert (run.path / "report.html").exists()
    warning = "the dev set has only 2 examples (fewer than 10 per label)"
    assert metrics["warnings"][0].startswith(warning)
    assert warning in (run.path / "log.txt").read_text() and warning in (run.path / "report.html").read_text()

    rows = cls.predict(str(run.path), ["so good", "meh"])
    assert [(r["label"], r["scores"]) for r in rows] == [("pos", {"neg": 0.1, "pos": 0.9}),
                                                         ("neg", {"neg": 0.8, "pos": 0.2})]
    report, _ = cls.evaluate(cls.ClsEvalConfig(model=str(run.path / "model"), data=str(tmp_path / "dev.txt")))
    assert report["macro_f1"] == 1.0
