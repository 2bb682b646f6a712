"""strategy.fewshot: pairs, sampling, contrastive training, heads, the saved format, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptlab.errors import DataError, ModelError, StrategyError
from adaptlab.tuning.families import CAUSAL_LM, ENCODER_SEQUENCE, ENCODER_TOKEN
from adaptlab.tuning.fewshot_model import HEAD_CONFIG, HEAD_WEIGHTS, FewshotClassifier
from adaptlab.tuning.strategies import StrategyBlock, resolve
from adaptlab.tuning.strategies.fewshot import (
    Fewshot,
    FewshotConfig,
    body_param_groups,
    contrastive_pairs,
    fit_logistic_head,
    load_body,
    sample_per_class,
    train_fewshot,
)

POSITIVE = ["good great film", "great fine movie", "fine good story", "lovely great acting", "good fine plot",
            "great lovely cast"]
NEGATIVE = ["bad awful film", "awful poor movie", "poor bad story", "dull awful acting", "bad poor plot",
            "awful dull cast"]
TEXTS = POSITIVE + NEGATIVE
LABELS = [["pos"]] * len(POSITIVE) + [["neg"]] * len(NEGATIVE)
PROBE = ["good film", "awful movie", "a plot"]


def fast(**changes) -> FewshotConfig:
    return FewshotConfig(**{"num_iterations": 3, "batch_size": 8, "progress": False, **changes})


def train(tmp_path: Path, model_dir: Path, name: str = "run", run_seed: int = 0, labels=None,
          label_names=("neg", "pos"), multi_label=False, **changes):
    return train_fewshot(TEXTS, labels or LABELS, list(label_names), multi_label, str(model_dir), fast(**changes),
                         run_seed, tmp_path / name)


# --------------------------------------------------------------------------------------------- pairs, sampling

def test_pairs_are_balanced_seeded_and_labelled_by_overlap():
    sets = [frozenset({label}) for label in ["a"] * 4 + ["b"] * 4 + ["c"] * 4]
    pairs = contrastive_pairs(sets, 5, np.random.default_rng(7))
    assert len(pairs) == 2 * 5 * 12
    positive = [p for p in pairs if p[2] > 0]
    assert len(positive) == 60 and all(p[2] == 1.0 for p in positive)
    assert all(sets[i] == sets[j] and i != j for i, j, _ in positive)
    assert all(sets[i] != sets[j] for i, j, t in pairs if t == 0)
    for i in range(12):  # every example anchors R positive and R negative pairs
        assert sum(1 for a, _, t in pairs if a == i and t > 0) == 5
        assert sum(1 for a, _, t in pairs if a == i and t == 0) == 5
    assert contrastive_pairs(sets, 5, np.random.default_rng(7)) == pairs
    assert contrastive_pairs(sets, 5, np.random.default_rng(8)) != pairs


def test_multi_label_pairs_target_the_jaccard_overlap():
    sets = [frozenset({"a"}), frozenset({"a", "b"}), frozenset({"b"}), frozenset({"c"})]
    pairs = contrastive_pairs(sets, 4, np.random.default_rng(0))
    assert {(i, j, t) for i, j, t in pairs if i == 0} <= {(0, 1, 0.5), (0, 2, 0.0), (0, 3, 0.0)}
    assert {t for i, j, t in pairs if i == 1 and t > 0} == {0.5}
    # "c" is alone: its positive partner is itself, so its pairs are still balanced
    assert sorted(t for i, _, t in pairs if i == 3) == [0.0] * 4 + [1.0] * 4
    assert all(j == 3 for i, j, t in pairs if i == 3 and t > 0)


def test_sampling_takes_k_per_class_with_the_seed():
    sets = [frozenset({label}) for label in ["a"] * 10 + ["b"] * 6]
    chosen = sample_per_class(sets, ["a", "b"], 4, seed=1)
    assert [sum(1 for i in chosen if "a" in sets[i]), sum(1 for i in chosen if "b" in sets[i])] == [4, 4]
    assert chosen == sample_per_class(sets, ["a", "b"], 4, seed=1)
    assert chosen != sample_per_class(sets, ["a", "b"], 4, seed=2)


def test_too_few_examples_names_the_class_and_its_count(tmp_path, tiny_bert_dir):
    sets = [frozenset({label}) for label in ["a"] * 10 + ["b"] * 2]
    with pytest.raises(DataError, match=r"label 'b' has only 2 training examples"):
        sample_per_class(sets, ["a", "b"], 3, seed=0)
    with pytest.raises(DataError, match=r"examples_per_class is 7, but label 'neg' has only 6"):
        train(tmp_path, tiny_bert_dir, examples_per_class=7)


def test_bad_labels_are_data_errors(tmp_path, tiny_bert_dir):
    with pytest.raises(DataError, match=r"example 1 has label 'meh', which is not one of"):
        train(tmp_path, tiny_bert_dir, labels=[["meh"]] + LABELS[1:])
    with pytest.raises(DataError, match=r"example 2 has 2 labels; single-label data needs exactly one"):
        train(tmp_path, tiny_bert_dir, labels=[["pos"], ["pos", "neg"]] + LABELS[2:])
    with pytest.raises(DataError, match=r"needs at least two labels, not \['pos'\]"):
        train(tmp_path, tiny_bert_dir, labels=[["pos"]] * len(TEXTS), label_names=("pos",))
    with pytest.raises(DataError, match=r"label 'x' has no training example"):
        train(tmp_path, tiny_bert_dir, label_names=("neg", "pos", "x"))
    with pytest.raises(DataError, match=r"label 'all' is on every training example"):
        train(tmp_path, tiny_bert_dir, labels=[names + ["all"] for names in LABELS], multi_label=True,
              label_names=("all", "neg", "pos"))


# --------------------------------------------------------------------------------------------- training

def same_minus_different_cosine(model_dir) -> float:
    body = load_body(str(model_dir), None)
    emb = torch.nn.functional.normalize(torch.tensor(body.encode(TEXTS)), dim=1)
    cos = emb @ emb.T
    n = len(POSITIVE)
    same = torch.cat([cos[:n, :n].flatten(), cos[n:, n:].flatten()]).mean()
    return float(same - cos[:n, n:].mean())


def test_training_changes_the_body_toward_the_labels(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    fit = train(tmp_path, tiny_bert_dir, body_learning_rate=1e-3, num_iterations=6)
    before, after = load_file(tiny_bert_dir / "model.safetensors"), load_file(fit.model_dir / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name.removeprefix("bert.")])]
    assert len(changed) > len(before) // 2
    # the contrastive stage pulls same-label texts together and pushes the others apart
    assert same_minus_different_cosine(fit.model_dir) > same_minus_different_cosine(tiny_bert_dir) + 0.05
    summary = fit.strategies["fewshot"]
    assert summary["pairs"] == 2 * 6 * 12 and summary["positive_pairs"] == 72 and summary["steps"] == 18
    assert [row["step"] for row in fit.history] == [10, 18] and fit.history[0]["loss"] > fit.history[-1]["loss"]


def test_same_seed_same_predictions_other_seed_different(tmp_path, tiny_bert_dir):
    runs = [train(tmp_path, tiny_bert_dir, name=f"r{i}", run_seed=seed) for i, seed in enumerate((3, 3, 4))]
    probs = [FewshotClassifier.load(fit.model_dir).predict_proba(PROBE) for fit in runs]
    assert np.array_equal(probs[0], probs[1])
    assert not np.allclose(probs[0], probs[2])
    overridden = train(tmp_path, tiny_bert_dir, name="r3", run_seed=99, seed=3)  # strategy.fewshot.seed wins
    assert np.array_equal(FewshotClassifier.load(overridden.model_dir).predict_proba(PROBE), probs[0])


def test_lr_decay_scales_the_layers_of_the_body(tmp_path, tiny_bert_dir):
    body = load_body(str(tiny_bert_dir), None)
    groups = body_param_groups(body, fast(lr_decay=0.5, body_learning_rate=1e-3))
    rate = {id(p): group["lr"] for group in groups for p in group["params"]}
    bert = body.transformers_model
    assert rate[id(bert.encoder.layer[1].attention.self.query.weight)] == pytest.approx(1e-3)
    assert rate[id(bert.encoder.layer[0].output.dense.weight)] == pytest.approx(5e-4)
    assert rate[id(bert.embeddings.word_embeddings.weight)] == pytest.approx(2.5e-4)
    assert [len(g["params"]) for g in body_param_groups(body, fast(body_learning_rate=1e-3))] == \
        [sum(1 for p in body.parameters() if p.requires_grad)]
    plain, decayed = train(tmp_path, tiny_bert_dir, name="plain"), train(tmp_path, tiny_bert_dir, name="decay",
                                                                         lr_decay=0.5)
    assert decayed.strategies["fewshot"]["lr_decay"] == 0.5
    assert not np.allclose(FewshotClassifier.load(plain.model_dir).predict_proba(PROBE),
                           FewshotClassifier.load(decayed.model_dir).predict_proba(PROBE))


# --------------------------------------------------------------------------------------------- heads, saved format

@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_head_matches_sklearn_predict_proba(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(30, 8)).astype(np.float32)
    y = np.arange(30) % classes
    member = np.eye(classes)[y]
    labels = [f"l{k}" for k in range(classes)]
    head = fit_logistic_head(embeddings, member, labels, False, fast())
    as_fitted = embeddings.astype(np.float64)  # the head is fitted (and applied) in float64
    expected = LogisticRegression(max_iter=1000).fit(as_fitted, y).predict_proba(as_fitted)
    assert head.weight.shape == ((1, 8) if classes == 2 else (classes, 8))
    np.testing.assert_allclose(head.probabilities(embeddings), expected, rtol=0, atol=1e-12)


def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    fit = train(tmp_path, tiny_bert_dir)
    model_dir = fit.model_dir
    assert model_dir == tmp_path / "run" / "model"
    assert not [p for p in model_dir.rglob("*") if p.suffix in (".pkl", ".bin", ".pt", ".joblib")]
    head = json.loads((model_dir / HEAD_CONFIG).read_text())
    assert head["labels"] == ["neg", "pos"] and head["head"] == "logistic" and head["multi_label"] is False
    assert head["normalize_embeddings"] is True and head["pooling"] == "Pooling(mean)"
    assert set(load_file(model_dir / HEAD_WEIGHTS)) == {"coef_", "intercept_"}

    loaded = FewshotClassifier.load(model_dir.parent)  # a run directory works too
    probs = loaded.predict_proba(PROBE, batch_size=2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    resaved = loaded.save(tmp_path / "copy")
    assert np.array_equal(FewshotClassifier.load(resaved).predict_proba(PROBE), probs)
    # the body opens in sentence-transformers as it is, and the head reads its embeddings
    body = SentenceTransformer(str(model_dir), device="cpu")
    embeddings = body.encode(PROBE, normalize_embeddings=True)
    np.testing.assert_allclose(loaded.head.probabilities(embeddings), probs, atol=1e-6)


def test_multi_label_gives_one_vs_rest_probabilities(tmp_path, tiny_bert_dir):
    labels = [["pos", "film"] if "film" in t else ["pos"] if i < 6 else ["neg", "film"] if "film" in t else ["neg"]
              for i, t in enumerate(TEXTS)]
    fit = train(tmp_path, tiny_bert_dir, labels=labels, multi_label=True, label_names=("film", "neg", "pos"))
    classifier = FewshotClassifier.load(fit.model_dir)
    assert classifier.multi_label and classifier.labels == ["film", "neg", "pos"]
    assert classifier.head.weight.shape == (3, 32)
    probs = classifier.predict_proba(PROBE)
    assert probs.shape == (3, 3) and ((probs > 0) & (probs < 1)).all()
    assert not np.allclose(probs.sum(axis=1), 1.0)
    assert 0 < fit.strategies["fewshot"]["positive_pairs"] < fit.strategies["fewshot"]["pairs"]


def test_differentiable_head_trains_end_to_end_and_round_trips(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    fit = train(tmp_path, tiny_bert_dir, head="differentiable", head_epochs=3)
    assert set(load_file(fit.model_dir / HEAD_WEIGHTS)) == {"weight", "bias"}
    classifier = FewshotClassifier.load(fit.model_dir)
    assert classifier.head.kind == "differentiable" and classifier.head.weight.shape == (2, 32)
    probs = classifier.predict_proba(PROBE)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    frozen = train(tmp_path, tiny_bert_dir, name="frozen", head="differentiable", head_epochs=3,
                   head_body_learning_rate=0)
    assert not np.allclose(FewshotClassifier.load(frozen.model_dir).predict_proba(PROBE), probs)


def test_loading_something_else_is_a_model_error(tmp_path, tiny_bert_dir):
    with pytest.raises(ModelError, match="not a few-shot classifier"):
        FewshotClassifier.load(tiny_bert_dir)
    fit = train(tmp_path, tiny_bert_dir)
    (fit.model_dir / HEAD_WEIGHTS).unlink()
    with pytest.raises(ModelError, match="not a complete few-shot classifier"):
        FewshotClassifier.load(fit.model_dir)


# --------------------------------------------------------------------------------------------- the strategy

@pytest.mark.parametrize("family", [ENCODER_TOKEN, CAUSAL_LM])
def test_refuses_families_other_than_sequence_classification(family):
    with pytest.raises(StrategyError, match=r"strategy\.fewshot: few-shot training builds a text classifier"):
        resolve(StrategyBlock(fewshot={}), family, model=None)


def test_accepts_sequence_classification_and_validates_its_keys():
    (strategy,) = resolve(StrategyBlock(fewshot={"num_iterations": 5}), ENCODER_SEQUENCE, model=None)
    assert isinstance(strategy, Fewshot) and strategy.summary()["num_iterations"] == 5
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        StrategyBlock(fewshot={"iterations": 5})
    with pytest.raises(ValueError, match="head"):
        StrategyBlock(fewshot={"head": "svm"})


def test_refuses_strategies_it_would_not_apply():
    class Other(Fewshot):
        name = "layers"

    strategy = Fewshot(FewshotConfig(), ENCODER_SEQUENCE)
    with pytest.raises(StrategyError, match=r"cannot apply strategy\.layers; remove it \(for layer-wise lr decay "
                                            r"set strategy\.fewshot\.lr_decay\)"):
        strategy.check(None, {"layers": Other(FewshotConfig(), ENCODER_SEQUENCE)})


def test_cls_train_and_evaluate_run_the_real_fewshot_strategy(tmp_path, tiny_bert_dir):
    from adaptlab.recipes.cls import ClsEvalConfig, ClsTrainConfig, evaluate
    from adaptlab.recipes.cls import predict as cls_predict
    from adaptlab.recipes.cls import train as cls_train

    data = tmp_path / "train.txt"
    data.write_text("".join(f"{names[0]} {text}\n" for text, names in zip(TEXTS, LABELS)), encoding="utf-8")
    config = ClsTrainConfig(model=str(tiny_bert_dir), train=str(data), dev_fraction=0, output=str(tmp_path / "run"),
                            training={"progress": False, "seed": 5},
                            strategy={"fewshot": {"num_iterations": 2, "examples_per_class": 4, "progress": False}})
    run, metrics = cls_train(config)
    summary = metrics["strategies"]["fewshot"]
    assert (summary["examples"], summary["pairs"], summary["seed"]) == (8, 2 * 2 * 8, 5)
    report, _ = evaluate(ClsEvalConfig(model=str(run.path), data=str(data)))
    probabilities = FewshotClassifier.load(run.path / "model").predict_proba(TEXTS)
    assert report["accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == [1] * 6 + [0] * 6))
    predicted = cls_predict(str(run.path), TEXTS[:3])
    assert [row["label"] for row in predicted] == [metrics["labels"][k] for k in probabilities[:3].argmax(axis=1)]


def test_cls_train_refuses_another_strategy_beside_fewshot(tmp_path, tiny_bert_dir, run_cli):
    data = tmp_path / "train.txt"
    data.write_text("".join(f"{names[0]} {text}\n" for text, names in zip(TEXTS, LABELS)), encoding="utf-8")
    code, _, err = run_cli("cls", "train", "--train", data, "--model", tiny_bert_dir, "--output", tmp_path / "run",
                           "strategy.fewshot.num_iterations=1", "strategy.layers.lr_decay=0.9")
    assert code == 2 and "strategy.fewshot" in err and "strategy.fewshot.lr_decay" in err
    assert not (tmp_path / "run").exists()
