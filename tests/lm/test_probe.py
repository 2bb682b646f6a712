"""Instruction probe: turn markers from the chat template, and stop / chat-format on models wired to behave."""

from __future__ import annotations

import pytest
from probe_models import CHAT_TEMPLATE, transition_model
from transformers import AutoTokenizer

from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.lm.probe import eos_token_ids, load_probe_prompts, probe_skip_reason, run_probe, turn_markers
from adaptlab.recipes.lm_evaluate import resolve_input

PROMPTS = [{"id": "a", "prompt": "What is a bond?"}, {"id": "b", "prompt": "Say hello to a new customer, please."}]


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer_dir):
    """MiniLM with [SEP] as its EOS token and a simple '<role>content' chat template."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, eos_token="[SEP]")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_turn_markers_come_from_the_rendered_template(chat_tokenizer, tokenizer_dir):
    assert turn_markers(chat_tokenizer) == ["< user >", "< assistant >"]  # WordPiece decoding adds the spaces
    chatml = AutoTokenizer.from_pretrained(tokenizer_dir, additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    chatml.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    markers = turn_markers(chatml)
    assert {"<|im_start|>", "<|im_end|>", "<|im_start|> user", "<|im_start|> assistant"} <= set(markers)
    assert not any("adaptlab" in m for m in markers)  # the sentinel contents are not framing
    broken = AutoTokenizer.from_pretrained(tokenizer_dir)
    broken.chat_template = "{{ raise_exception('no user turns here') }}"
    with pytest.raises(ModelError, match="cannot render one user message: no user turns here"):
        turn_markers(broken)


@pytest.mark.parametrize(("transitions", "default", "expected", "response"), [
    ({}, "[SEP]", {"stopped": 2, "chat_format": 0, "both": 0}, ""),  # EOS at once: stops, but says nothing
    ({}, "hello", {"stopped": 0, "chat_format": 2, "both": 0}, "hello hello hello hello hello"),  # never stops
    ({"hello": "[SEP]"}, "hello", {"stopped": 2, "chat_format": 2, "both": 2}, "hello"),  # answers, then EOS
    ({">": "hello", "hello": "<", "<": "user", "user": ">"}, "hello",  # writes the user's next turn itself
     {"stopped": 0, "chat_format": 0, "both": 0}, "hello < user > hello"),
])
def test_stop_and_chat_format_on_wired_models(chat_tokenizer, transitions, default, expected, response):
    model = transition_model(chat_tokenizer, transitions, default)
    result = run_probe(model, chat_tokenizer, PROMPTS, max_new_tokens=5, batch_size=1)
    assert result["counts"] == expected and result["prompts"] == 2
    assert result["both"] == expected["both"] / 2 and result["eos_ids"] == [chat_tokenizer.sep_token_id]
    first = result["responses"][0]
    assert first["response"] == response and first["prompt"] == "What is a bond?"
    assert first["new_tokens"] == (len(response.split()) + 1 if first["stopped"] else 5)
    batched = run_probe(model, chat_tokenizer, PROMPTS, max_new_tokens=5, batch_size=2)  # left padding changes nothing
    assert [r["response"] for r in batched["responses"]] == [r["response"] for r in result["responses"]]


def test_eos_ids_join_generation_config_and_tokenizer(chat_tokenizer):
    model = transition_model(chat_tokenizer, {}, "hello")
    model.generation_config.eos_token_id = [7, 102]
    assert eos_token_ids(model, chat_tokenizer) == [7, 102]
    model.generation_config.eos_token_id = 9
    assert eos_token_ids(model, chat_tokenizer) == [9, 102]


def test_a_tokenizer_without_chat_template_is_skipped_with_a_note(tokenizer, tiny_llama):
    reason = probe_skip_reason(tokenizer)
    assert reason is not None and "no chat template" in reason
    with pytest.raises(ConfigError, match="no chat template"):
        run_probe(tiny_llama(), tokenizer, PROMPTS)


def test_prompt_file_loading_and_errors(tmp_path):
    packaged = load_probe_prompts(resolve_input("packaged:probe_prompts"))
    assert 12 <= len(packaged) <= 20 and all(p["prompt"].strip() for p in packaged)
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"p.jsonl:2: each line must be"):
        load_probe_prompts(bad)
    bad.write_text('{"prompt": "ok", "system": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"p.jsonl:1: unknown key"):
        load_probe_prompts(bad)
