"""Sentence-feature cache: real packaged MiniLM embeddings, cache hits, persistence, chunked contexts, bag features."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from adaptlab.errors import ConfigError, DataError
from adaptlab.fractal.features import (
    FeatureCache,
    bag_features,
    default_model_path,
    model_cache_key,
    normalise_text,
)

TEXTS = ["The Eiffel Tower is in Paris.", "Bananas are yellow.", "Paris is the capital of France."]
LONG_CONTEXT = (
    "Paris is the capital and most populous city of France. The Eiffel Tower was built for the 1889 World's Fair. "
    "It was designed by the engineering company of Gustave Eiffel. Bananas grow in tropical regions of the world."
)


@dataclass
class FakeBag:
    id: str
    context: str | None
    sentences: list[str]


def count_encodes(cache: FeatureCache, monkeypatch) -> list[int]:
    """Wrap the model's encode; the returned list receives the number of texts of each call."""
    calls: list[int] = []
    original = cache.model.encode

    def counting_encode(texts, **kwargs):
        calls.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(cache.model, "encode", counting_encode)
    return calls


def test_embed_shapes_read_only_and_memmapped(tmp_path):
    with FeatureCache(tmp_path) as cache:
        emb = cache.embed(TEXTS + ["  The Eiffel   Tower is in Paris. "])
        assert emb.shape == (4, 384) and emb.dtype == np.float32
        assert cache.embedding_dim == 384 and cache.feature_dim == 4 * 384
        assert not emb.flags.writeable
        np.testing.assert_array_equal(emb[0], emb[3])  # same normalised text, same row
        assert cache.encoded_count == 3
        matrix = cache.matrix
        assert isinstance(matrix, np.memmap) and not matrix.flags.writeable and matrix.shape == (3, 384)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # MiniLM normalises
        direct = cache.model.encode([normalise_text(t) for t in TEXTS], convert_to_numpy=True)
        np.testing.assert_allclose(emb[:3], direct, atol=1e-5)
        assert cache.embed([]).shape == (0, 384)


def test_second_call_encodes_nothing_and_new_texts_are_appended(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path, batch_size=2)
    calls = count_encodes(cache, monkeypatch)
    first = cache.embed(TEXTS + TEXTS)
    assert calls == [3]
    again = cache.embed(list(reversed(TEXTS)))
    assert calls == [3]
    np.testing.assert_array_equal(again, first[[2, 1, 0]])
    more = cache.embed(["A new sentence about cats.", TEXTS[1]])
    assert calls == [3, 1] and cache.matrix.shape[0] == 4
    np.testing.assert_array_equal(more[1], first[1])
    np.testing.assert_array_equal(cache.embed(TEXTS), first[:3])  # old rows untouched by the append
    cache.close()


def test_cache_persists_across_instances_without_loading_the_model(tmp_path):
    first = FeatureCache(tmp_path).embed(TEXTS)
    second = FeatureCache(tmp_path)
    np.testing.assert_array_equal(second.embed(TEXTS), first)
    assert second.encoded_count == 0
    assert second._model is None  # a fully cached embed never loads the encoder


def test_model_identity_changes_the_cache_directory(tmp_path):
    default = FeatureCache(tmp_path)
    short = FeatureCache(tmp_path, max_seq_length=16)
    assert default.directory != short.directory
    default.embed(TEXTS)
    short.embed(TEXTS[:1])
    assert short.encoded_count == 1  # nothing borrowed from the other model's cache

    model_a, model_b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    for directory, hidden in ((model_a, 32), (model_b, 64)):
        directory.mkdir(parents=True)
        (directory / "config.json").write_text(f'{{"hidden_size": {hidden}}}')
    assert model_cache_key(str(model_a)) != model_cache_key(str(model_b))
    assert model_cache_key(str(model_a)) == model_cache_key(str(model_a))
    assert model_cache_key("org/some-model") != model_cache_key("org/other-model")


def test_long_context_is_chunked_and_max_pooled(tmp_path):
    cache = FeatureCache(tmp_path, max_seq_length=16)
    chunks = cache.context_chunks(LONG_CONTEXT)
    assert len(chunks) >= 3
    assert " ".join(chunks) == normalise_text(LONG_CONTEXT)  # chunks cover the text, words are never cut
    window = 16 - cache.model.tokenizer.num_special_tokens_to_add(pair=False)
    for chunk in chunks:
        assert 0 < len(cache.model.tokenizer(chunk, add_special_tokens=False)["input_ids"]) <= window
    context_emb = cache.embed_contexts([LONG_CONTEXT, "Bananas are yellow."])
    np.testing.assert_array_equal(context_emb[0], cache.embed(chunks).max(axis=0))
    assert cache.context_chunks("Bananas are yellow.") == ["Bananas are yellow."]
    np.testing.assert_array_equal(context_emb[1], cache.embed(["Bananas are yellow."])[0])
    assert not context_emb.flags.writeable


def test_unfinished_append_is_dropped_and_damage_is_reported(tmp_path):
    first = FeatureCache(tmp_path).embed(TEXTS)
    directory = FeatureCache(tmp_path).directory
    with open(directory / "vectors.bin", "ab") as fh:  # rows written, crash before their keys
        fh.write(np.ones((2, 384), dtype=np.float32).tobytes())
    reopened = FeatureCache(tmp_path)
    assert reopened.matrix.shape == (3, 384)
    assert os.path.getsize(directory / "vectors.bin") == 3 * 384 * 4
    np.testing.assert_array_equal(reopened.embed(TEXTS), first)
    reopened.embed(["One more sentence."])
    assert reopened.matrix.shape == (4, 384)

    with open(directory / "keys.bin", "ab") as fh:  # a key with no row cannot come from adaptlab
        fh.write(b"\0" * 32)
    with pytest.raises(DataError, match="Delete this directory"):
        FeatureCache(tmp_path)


def test_float16_storage_and_dtype_mismatch(tmp_path):
    reference = FeatureCache(tmp_path / "f32").embed(TEXTS)
    half = FeatureCache(tmp_path / "f16", storage_dtype="float16")
    emb = half.embed(TEXTS)
    assert emb.dtype == np.float32 and half.matrix.dtype == np.float16
    np.testing.assert_allclose(emb, reference, atol=2e-3)
    with pytest.raises(ConfigError, match="float16"):
        FeatureCache(tmp_path / "f16", storage_dtype="float32")


def test_bag_features_shapes_similarities_and_missing_context(tmp_path):
    bags = [
        FakeBag("q1", "Where is the Eiffel Tower?", ["The Eiffel Tower is in Paris.", "Bananas are yellow."]),
        FakeBag("q2", None, ["Paris is the capital of France."]),
        FakeBag("q3", "  ", ["Bananas are yellow.", "Paris is the capital of France.", "Cats sleep a lot."]),
        FakeBag("q4", "Where is the Eiffel Tower?", ["It stands on the Champ de Mars."]),
    ]
    cache = FeatureCache(tmp_path)
    features, bag_index, context_sim, sentence_emb = bag_features(cache, bags)
    d = cache.embedding_dim
    assert features.shape == (7, cache.feature_dim) and features.dtype == np.float32
    assert bag_index.tolist() == [0, 0, 1, 2, 2, 2, 3]
    assert sentence_emb.shape == (7, d)
    has_context = ~np.isnan(context_sim)
    assert has_context.tolist() == [True, True, False, False, False, False, True]
    assert np.all((context_sim[has_context] >= -1) & (context_sim[has_context] <= 1))
    assert context_sim[0] > context_sim[1] + 0.2  # the answer is closer to the question than bananas are
    question = cache.embed_contexts(["Where is the Eiffel Tower?"])[0]
    np.testing.assert_allclose(features[0, :d], sentence_emb[0])
    np.testing.assert_allclose(features[0, d : 2 * d], question)
    np.testing.assert_allclose(features[0, 2 * d : 3 * d], sentence_emb[0] * question, atol=1e-7)
    np.testing.assert_allclose(features[0, 3 * d :], np.abs(sentence_emb[0] - question), atol=1e-7)
    np.testing.assert_array_equal(features[2, d:], 0.0)  # no context: the three context blocks are zero
    np.testing.assert_allclose(features[2, :d], sentence_emb[2])


def test_bad_input_is_reported(tmp_path):
    with pytest.raises(DataError, match="'empty' has no sentences"):
        bag_features(FeatureCache(tmp_path), [FakeBag("empty", "ctx", [])])
    with pytest.raises(ConfigError, match="batch_size"):
        FeatureCache(tmp_path, batch_size=0)
    with pytest.raises(ConfigError, match="storage_dtype"):
        FeatureCache(tmp_path, storage_dtype="int8")


def test_default_model_is_the_packaged_minilm():
    assert os.path.isfile(os.path.join(default_model_path(), "model.safetensors"))
