"""End-to-end encoder fine-tuning (train.encoder=finetune) on a tiny random sentence-transformers encoder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from adaptlab.errors import ConfigError, ModelError
from adaptlab.fractal.bags import Bag, write_bags
from adaptlab.fractal.features import FeatureCache, model_cache_key
from adaptlab.fractal.finetune import (
    FINGERPRINT_FILE,
    EncoderScorer,
    load_encoder,
    save_finetuned_scorer,
)
from adaptlab.fractal.model import SentenceScorer, load_scorer
from adaptlab.fractal.train import FractalTrainConfig, fit, sentence_scores, train_sentences
from adaptlab.recipes import fractal as recipe

GOOD = ["The river flows north into the sea.", "Water boils at one hundred degrees.", "The moon orbits the earth.",
        "Everest is the highest mountain on earth."]
BAD = ["I like the colour of this page.", "Thanks for asking such a nice question!", "Let me know if you need more.",
       "Have a wonderful day ahead, friend."]
LONG_CONTEXT = ("Tell me a geography or science fact, please, something true about rivers, the moon, mountains or "
                "water, and keep it short enough to read in a moment while waiting for the bus to come.")


def text_bags(n: int = 16) -> list[Bag]:
    """MAX bags: positive bags hold one GOOD sentence among BAD ones; every fourth bag has a long context."""
    bags = []
    for i in range(n):
        positive = i % 2 == 0
        sentences = [BAD[i % 4], BAD[(i + 1) % 4]] + ([GOOD[i % 4]] if positive else [])
        context = LONG_CONTEXT if i % 4 == 1 else None if i % 4 == 3 else "Tell me a fact."
        bags.append(Bag(id=f"b{i}", context=context, sentences=sentences, offsets=None, label=float(positive),
                        sentence_labels=[0.0, 0.0] + ([1.0] if positive else []), group=f"q{i // 2}"))
    return bags


@pytest.fixture(scope="module")
def encoder_dir(tiny_bert_dir, tmp_path_factory):
    """The tiny random BERT as a sentence-transformers model (mean pooling, window 64 tokens)."""
    from sentence_transformers import SentenceTransformer, models

    out = tmp_path_factory.mktemp("tiny-st")
    transformer = models.Transformer(str(tiny_bert_dir), max_seq_length=64)
    SentenceTransformer(modules=[transformer, models.Pooling(32, "mean")], device="cpu").save(
        str(out), create_model_card=False)
    return out


def featurize(encoder_dir, tmp_path, bags, max_seq_length=None):
    cfg = recipe.FractalDataConfig(cache_dir=str(tmp_path / "cache"), feature_model=str(encoder_dir))
    data, _ = recipe.featurize(cfg, bags, max_seq_length=max_seq_length)
    return data


def finetune_cfg(**overrides) -> FractalTrainConfig:
    base = dict(encoder="finetune", epochs=2, encoder_epochs=3, hidden=16, batch_bags=8, encoder_learning_rate=1e-3,
                encoder_batch_size=8)
    return FractalTrainConfig(**{**base, **overrides})


def test_live_features_match_the_cached_ones_including_chunked_contexts(encoder_dir, tmp_path):
    data = featurize(encoder_dir, tmp_path, text_bags(), max_seq_length=16)
    model = EncoderScorer(load_encoder(str(encoder_dir), max_length=16), SentenceScorer(data.features.shape[1], 8))
    assert len(model.encoder.tokenizer(LONG_CONTEXT)["input_ids"]) > 16  # the long context is really chunked
    torch.testing.assert_close(model.score(data), model.head.score(data.features), atol=1e-5, rtol=1e-4)
    layout = model._layout(data)
    assert max(len(chunks) for chunks in layout.context_chunks) >= 3
    assert len(layout.texts) < len(data.features) + 3  # each distinct text is encoded once per step


def test_gradcache_gradients_equal_one_big_graph_with_dropout(encoder_dir, tmp_path):
    data = featurize(encoder_dir, tmp_path, text_bags(6))
    encoder = load_encoder(str(encoder_dir))
    for module in encoder.modules():  # strong dropout: equal gradients need the same masks in both passes
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    torch.manual_seed(0)
    model = EncoderScorer(encoder, SentenceScorer(data.features.shape[1], 8), batch_size=3).train()
    target = torch.rand(len(data.features))

    def loss_fn(features):
        return {"loss": ((model.head(features) - target) ** 2).mean()}

    torch.manual_seed(1)
    model.backward(data, loss_fn)
    cached = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(1)  # the reference: the same micro-batches, one graph kept over all of them
    layout = model._layout(data)
    micro = model._micro_batches(layout.texts)
    pieces = torch.cat([model._encode([layout.texts[r] for r in rows]) for rows in micro])
    order = torch.argsort(torch.tensor([r for rows in micro for r in rows]))
    loss_fn(model._features(pieces[order], layout))["loss"].backward()
    assert any(name.startswith("encoder.") for name in cached) and len(micro) > 1
    for name, p in model.named_parameters():
        if name in cached:
            torch.testing.assert_close(cached[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_finetune_starts_from_frozen_training_and_moves_the_encoder(encoder_dir, tmp_path):
    data = featurize(encoder_dir, tmp_path, text_bags())
    cfg = finetune_cfg(weights={"cosine": 0.0, "correlation": 0.0})
    model, history = fit(data, cfg, encoder_model=str(encoder_dir))
    assert isinstance(model, EncoderScorer)
    assert [h["stage"] for h in history] == ["head"] * 2 + ["joint"] * 3
    _, frozen_history = fit(data, cfg.model_copy(update={"encoder": "frozen"}))
    assert [{k: v for k, v in h.items() if k != "stage"} for h in history[:2]] == frozen_history
    # joint epochs keep lowering the loss and end below where frozen training stopped (the first joint epoch,
    # with the encoder's dropout now on, may start above it)
    assert history[-1]["loss"] < history[2]["loss"] and history[-1]["loss"] < history[1]["loss"]
    initial = load_encoder(str(encoder_dir)).state_dict()
    changed = [name for name, value in model.encoder.state_dict().items() if not torch.equal(value, initial[name])]
    assert len(changed) > 10
    scores = sentence_scores(model, data)
    assert scores.shape == (len(data.features),) and not torch.equal(scores, model.head.score(data.features))


def test_pseudo_labels_and_supervised_fine_tune_a_fresh_encoder(encoder_dir, tmp_path, monkeypatch):
    import adaptlab.fractal.train as train_module

    loads = []
    original = train_module.load_encoder
    monkeypatch.setattr(train_module, "load_encoder", lambda *a: loads.append(a) or original(*a))
    data = featurize(encoder_dir, tmp_path, text_bags(8))
    cfg = finetune_cfg(pseudo_label=True, encoder_epochs=1)
    model, _ = fit(data, cfg, encoder_model=str(encoder_dir))
    assert isinstance(model, EncoderScorer) and loads == [(str(encoder_dir), None)] * 2  # bags, then pseudo-labels
    supervised = train_sentences(data, data.sentence_labels, cfg, batch_size=8, encoder_model=str(encoder_dir))
    assert isinstance(supervised, EncoderScorer)
    assert sentence_scores(supervised, data).shape == (len(data.features),)


def test_save_load_round_trip_scores_identically_with_its_own_cache(encoder_dir, tmp_path):
    bags = text_bags()
    write_bags(bags, tmp_path / "bags.jsonl")
    data = featurize(encoder_dir, tmp_path, bags)
    model, _ = fit(data, finetune_cfg(encoder_epochs=1), encoder_model=str(encoder_dir))
    expected = sentence_scores(model, data)
    save_finetuned_scorer(model, tmp_path / "scorer", {"aggregation": "max", "cache_dir": str(tmp_path / "cache")})
    head, info = load_scorer(tmp_path / "scorer")
    assert info["feature_model"] == str((tmp_path / "scorer" / "encoder").resolve())
    recipe.score(str(tmp_path / "scorer"), str(tmp_path / "bags.jsonl"), str(tmp_path / "scores.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    torch.testing.assert_close(torch.tensor([s for row in rows for s in row["scores"]]), expected,
                               atol=1e-5, rtol=1e-4)

    frozen = FeatureCache(tmp_path / "cache", str(encoder_dir))
    tuned = FeatureCache(tmp_path / "cache", info["feature_model"])
    assert frozen.directory != tuned.directory and tuned.directory.name.startswith("scorer-encoder-")
    scored = GOOD[::2]  # the GOOD sentences the bags hold
    assert not torch.allclose(torch.tensor(frozen.embed(scored)), torch.tensor(tuned.embed(scored)), atol=1e-4)
    assert tuned.encoded_count == 0  # scoring already cached them, under the fine-tuned model's key

    other, _ = fit(data, finetune_cfg(encoder_epochs=1, seed=1), encoder_model=str(encoder_dir))
    save_finetuned_scorer(other, tmp_path / "other", {})
    first, second = tmp_path / "scorer" / "encoder", tmp_path / "other" / "encoder"
    assert model_cache_key(str(first)) != model_cache_key(str(second))
    for directory in (first, second):  # same architecture, same file sizes: only the fingerprint tells them apart
        shutil.copytree(directory, tmp_path / "bare" / directory.parent.name)
        (tmp_path / "bare" / directory.parent.name / FINGERPRINT_FILE).unlink()
    assert model_cache_key(str(tmp_path / "bare" / "scorer")).split("-")[-1] == \
        model_cache_key(str(tmp_path / "bare" / "other")).split("-")[-1]

    shutil.rmtree(tmp_path / "scorer" / "encoder")
    with pytest.raises(ModelError, match="fine-tuned encoder"):
        load_scorer(tmp_path / "scorer")


def test_cli_train_score_and_evaluate_fine_tune(encoder_dir, tmp_path, run_cli, monkeypatch):
    import adaptlab.fractal.train as train_module

    write_bags(text_bags(), tmp_path / "bags.jsonl")
    common = [f"cache_dir={tmp_path / 'cache'}", f"feature_model={encoder_dir}", "train.encoder=finetune",
              "train.epochs=2", "train.encoder_epochs=1", "train.hidden=16", "train.encoder_max_length=32"]
    code, out, err = run_cli("fractal", "train", "--data", tmp_path / "bags.jsonl", "--output", tmp_path / "run",
                             *common)
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "model" / "scorer.json").read_text())
    assert info["encoder"] == "encoder" and info["finetuned_from"] == str(encoder_dir)
    assert load_encoder(str(tmp_path / "run" / "model" / "encoder")).max_seq_length == 32
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["stage"] for h in history] == ["head", "head", "joint"]
    code, _, err = run_cli("fractal", "score", "--model", tmp_path / "run", "--input", tmp_path / "bags.jsonl",
                           "--output", tmp_path / "scores.jsonl")
    assert code == 0, err

    loads = []
    original = train_module.load_encoder
    monkeypatch.setattr(train_module, "load_encoder", lambda *a: loads.append(a) or original(*a))
    code, out, err = run_cli("fractal", "evaluate", "--data", tmp_path / "bags.jsonl", "--output",
                             tmp_path / "eval", *common, "folds=2", "seeds=[0]", "methods=[cosine,bagloss,fractal]",
                             "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"cosine", "bagloss", "fractal"}
    assert loads == [(str(encoder_dir), 32)] * 4  # every fold and method starts again from the initial encoder
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["encoder"] == "finetune"


def test_config_and_data_mistakes_are_reported(encoder_dir, tmp_path):
    with pytest.raises(ConfigError, match="encoder_max_length applies to train.encoder=finetune"):
        FractalTrainConfig(encoder_max_length=64)
    data = featurize(encoder_dir, tmp_path, text_bags(4))
    data.texts = None
    with pytest.raises(ConfigError, match="needs the bags' texts"):
        fit(data, finetune_cfg(epochs=1, encoder_epochs=1), encoder_model=str(encoder_dir))
    with pytest.raises(ModelError, match="cannot load"):
        load_encoder(str(tmp_path / "no-such-model"))
