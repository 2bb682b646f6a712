"""Merges across different tokenizers: strict stops with the options, union carries the chat tokens over."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlab.errors import ModelError
from adaptlab.merge.chat_vector import chat_vector_config
from adaptlab.merge.engine import merge_models


@pytest.fixture(scope="module")
def chat_instruct(tmp_path_factory, model_family, derive, chat_template):
    """The family's instruct model with two added chat tokens and a grown embedding."""
    family = model_family("llama")
    path = tmp_path_factory.mktemp("chat-instruct")
    tokenizer = AutoTokenizer.from_pretrained(family["instruct"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = chat_template
    model = AutoModelForCausalLM.from_pretrained(family["base"])
    model = derive(model, 5)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[-2:] = torch.tensor([[0.5] * 32, [-0.5] * 32])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return family, path


def test_strict_vocab_stops_with_the_options(chat_instruct, tmp_path):
    family, instruct = chat_instruct
    with pytest.raises(ModelError, match=r"<\|im_start\|>.*vocab: base.*vocab: union"):
        merge_models(chat_vector_config(str(family["base"]), str(instruct), str(family["domain"]), str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_union_vocab_keeps_the_instruct_chat_tokens(chat_instruct, tmp_path, state):
    family, instruct = chat_instruct
    out = tmp_path / "union"
    merge_models(chat_vector_config(str(family["base"]), str(instruct), str(family["domain"]), str(out),
                                    vocab="union"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert start == 30522 and tokenizer.convert_tokens_to_ids("<|im_end|>") == 30523
    merged, base, domain, chat = (state(p) for p in (out, family["base"], family["domain"], instruct))
    embedding = merged["model.embed_tokens.weight"]
    assert embedding.shape == (30524, 32)
    torch.testing.assert_close(embedding[start], torch.full((32,), 0.5))
    name = "model.embed_tokens.weight"
    expected = domain[name] + (chat[name][:30522] - base[name])
    torch.testing.assert_close(embedding[:30522], expected, rtol=0, atol=1e-6)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 30524
    report = json.loads((out / "merge_report.json").read_text())
    assert report["vocab"]["mode"] == "union"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generate(torch.tensor([[start, 2000]]), max_new_tokens=2, do_sample=False).shape == (1, 4)


def test_base_vocab_drops_tokens_the_output_tokenizer_lacks(chat_instruct, tmp_path, state):
    family, instruct = chat_instruct
    out = tmp_path / "base"
    merge_models(chat_vector_config(str(family["base"]), str(instruct), str(family["domain"]), str(out),
                                    vocab="base"))
    assert state(out)["model.embed_tokens.weight"].shape == (30522, 32)
