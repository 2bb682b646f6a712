"""Packing keeps document boundaries: positions restart, labels never cross, attention never crosses."""

from __future__ import annotations

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.lm.packing import IGNORE_INDEX, PackedCollator, encode_document, pack_documents


def test_rows_restart_positions_and_mask_first_labels():
    rows, stats = pack_documents([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 0], [0, 0, 1, 2], [0]]
    assert rows[0]["labels"] == [IGNORE_INDEX, 2, 3, IGNORE_INDEX]
    assert rows[1]["labels"] == [IGNORE_INDEX, IGNORE_INDEX, 7, 8]
    assert stats.as_dict() == {"documents": 3, "tokens": 9, "blocks": 3, "split_documents": 2,
                               "longer_than_block": 0, "padding_tokens": 3}


def test_long_documents_are_split_and_counted_never_cut():
    doc = list(range(1, 11))
    for split_across in (True, False):
        rows, stats = pack_documents([doc, [20, 21]], block_size=4, split_across_blocks=split_across)
        kept = [t for r in rows for t in r["input_ids"]]
        assert kept == [*doc, 20, 21]  # every token is kept, in order
        assert stats.longer_than_block == 1 and stats.split_documents == 1
        assert all(len(r["input_ids"]) <= 4 for r in rows)


def test_without_splitting_short_documents_start_a_new_block():
    rows, stats = pack_documents([[1, 2, 3], [4, 5]], block_size=4, split_across_blocks=False)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3], [4, 5]]
    assert stats.split_documents == 0 and stats.padding_tokens == 3


def test_bad_block_size_is_a_config_error():
    with pytest.raises(ConfigError, match="block_size"):
        pack_documents([[1, 2]], block_size=1)


def test_encode_document_adds_separator(tokenizer):
    ids = encode_document(tokenizer, "Snow leopards live in mountains.")
    assert ids[-1] == tokenizer.sep_token_id and tokenizer.cls_token_id not in ids


def test_collator_pads_as_its_own_document():
    rows, _ = pack_documents([[1, 2, 3, 4], [5, 6]], block_size=4)
    batch = PackedCollator(pad_token_id=0)(rows)
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    assert batch["labels"].tolist()[1] == [IGNORE_INDEX, 6, IGNORE_INDEX, IGNORE_INDEX]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_and_loss_equal_separate_documents(tiny_llama, attention):
    """The transformers packed-sequence mask really isolates documents: logits and loss match solo runs."""
    model = tiny_llama(head_scale=20.0).eval()
    model.config._attn_implementation = attention
    docs = [[101, 2000, 2001, 2002, 102], [101, 3000, 3001, 102], [101, 4000, 4001, 4002, 4003, 102]]
    rows, _ = pack_documents(docs, block_size=15)
    batch = PackedCollator(pad_token_id=0)(rows)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start, solo_losses = 0, []
        for doc in docs:
            ids = torch.tensor([doc])
            solo = model(input_ids=ids, labels=ids)
            torch.testing.assert_close(packed[start:start + len(doc)], solo.logits[0], atol=1e-5, rtol=1e-4)
            solo_losses.append(solo.loss * (len(doc) - 1))
            start += len(doc)
        packed_loss = model(**batch, use_cache=False).loss
        leaky = model(**batch).logits[0]  # a KV cache (use_cache defaults to true) turns packing detection off
    assert not torch.allclose(leaky[len(docs[0]):], packed[len(docs[0]):], atol=1e-3)
    n_targets = sum(len(d) - 1 for d in docs)
    torch.testing.assert_close(packed_loss, torch.stack(solo_losses).sum() / n_targets, atol=1e-5, rtol=1e-4)
