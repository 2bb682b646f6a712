"""The model card of `lm train` with a tiny Llama: continued pretraining (AutoModelForCausalLM and the chat template)
and SFT saved as a LoRA adapter (PeftModel on the base); both snippets run as written and generate."""

from __future__ import annotations

import json

import pytest
import yaml
from train_helpers import save_tiny_llama, train_config, write_prepared_corpus, write_sft_jsonl

from adaptlab.config import validate_config
from adaptlab.recipes.lm_train import LMTrainConfig, train
from model_cards import read_card, resolved_config, run_load_snippet, section

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("lm-card") / "model")


def test_a_continued_pretraining_card(model, tmp_path):
    corpus = write_prepared_corpus(tmp_path / "corpus", model, train_docs=16)
    run, metrics = train(validate_config(LMTrainConfig, train_config(model, corpus, tmp_path / "run", max_steps=2)))
    front, body = read_card(run.model)
    assert front == {"library_name": "transformers", "pipeline_tag": "text-generation",
                     "tags": ["adaptlab", "continued-pretraining"]}
    assert "A causal language model (LlamaForCausalLM), continually pretrained on domain text." in body
    table = section(body, "Metrics")
    assert f"| final_eval_domain_perplexity | {metrics['final_eval_domain_perplexity']:.4g} |" in table
    assert "| steps | 2 |" in table
    data = section(body, "Data")
    assert f"- data: `{corpus}`" in data and "- data_stats.splits.train.rows: " in data
    assert "- mode: `cpt`" in section(body, "Method and strategy")
    assert resolved_config(run.model) == yaml.safe_load(run.config.read_text())
    assert "apply_chat_template" in section(body, "How to load it")
    assert run_load_snippet(run.model).endswith("\n")  # it generated, and printed the completion


def test_a_lora_adapter_card_loads_with_peft(model, tmp_path):
    data = write_sft_jsonl(tmp_path / "train.jsonl", 12)
    config = train_config(model, data, tmp_path / "run", mode="sft", max_steps=2,
                          strategy={"peft": {"r": 4, "lora_alpha": 8, "save": "adapter"}})
    run, _ = train(validate_config(LMTrainConfig, config))
    front, body = read_card(run.model)
    assert (front["library_name"], front["pipeline_tag"]) == ("peft", "text-generation")
    assert {"sft", "peft", "lora"} <= set(front["tags"])
    assert json.loads((run.model / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model)
    snippet = section(body, "How to load it")
    assert f'AutoModelForCausalLM.from_pretrained("{model}")' in snippet
    assert "PeftModel.from_pretrained(base, adapter).merge_and_unload()" in snippet
    assert "- data_stats.train.conversations: 12" in section(body, "Data")
    assert run_load_snippet(run.model).endswith("\n")
