"""A tiny BERT whose weights are the same in every session, so that what the classification tests train is too."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def seeded_tiny_bert(tiny_bert_dir, tmp_path_factory) -> Path:
    """``tiny_bert_dir`` (its config and tokenizer) re-initialised from torch seed 0."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("seeded-tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(tiny_bert_dir)).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every module here trains tiny models: one torch thread (the root conftest's ``one_torch_thread``)."""
