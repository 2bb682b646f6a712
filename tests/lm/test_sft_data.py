"""SFT encoding: chat template rendering, loss on assistant tokens (with end of turn) only, truncation counted."""

from __future__ import annotations

import json

import pytest
from train_helpers import tiny_tokenizer

from adaptlab.errors import DataError, ModelError
from adaptlab.lm.sft_data import IGNORE_INDEX, encode_conversation, encode_sft_file, require_chat_template

CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "bond yield"},
    {"role": "assistant", "content": "rate bank loan"},
    {"role": "user", "content": "snow"},
    {"role": "assistant", "content": "river"},
]


def target_runs(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive target positions, as token ids."""
    runs, current = [], []
    for token, label in zip(input_ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([current] if current else [])


def write_jsonl(path, conversations) -> str:
    path.write_text("\n".join(json.dumps(c) for c in conversations) + "\n", encoding="utf-8")
    return str(path)


def test_only_assistant_turns_and_their_end_of_turn_are_targets():
    tokenizer = tiny_tokenizer()
    input_ids, labels, has_end = encode_conversation(tokenizer, CONVERSATION)
    assert tokenizer.decode(input_ids) == ("system : be brief </s> user : bond yield </s> assistant : rate bank loan "
                                           "</s> user : snow </s> assistant : river </s>")
    runs = [tokenizer.decode(run) for run in target_runs(input_ids, labels)]
    assert runs == ["rate bank loan </s>", "river </s>"]  # EOS ends each target, the role header is context
    assert has_end == [True, True]


def test_wordpiece_tokenizer_with_a_given_template(tokenizer):
    """A real subword tokenizer: offsets map the rendered text back to tokens; [SEP] ends the turns."""
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [SEP] {% endfor %}"
                               "{% if add_generation_prompt %}[assistant] {% endif %}")
    messages = [{"role": "user", "content": "Where do snow leopards live?"},
                {"role": "assistant", "content": "In the mountains of Central Asia."}]
    input_ids, labels, has_end = encode_conversation(tokenizer, messages)
    runs = target_runs(input_ids, labels)
    assert len(runs) == 1
    assert tokenizer.convert_ids_to_tokens(runs[0])[-1] == "[SEP]" and has_end == [True]
    assert tokenizer.decode(runs[0][:-1]) == "in the mountains of central asia."


def test_targets_start_right_after_the_generation_prompt():
    """The context before the first target is exactly what the template renders as the prompt for that turn."""
    tok = tiny_tokenizer()
    input_ids, labels, _ = encode_conversation(tok, CONVERSATION)
    prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    first_target = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert tok.decode(input_ids[:first_target]) == prompt.strip()


def test_truncation_is_counted_and_targetless_rows_skipped(tmp_path):
    tokenizer = tiny_tokenizer()
    long_answer = {"messages": [{"role": "user", "content": "bond"},
                                {"role": "assistant", "content": " ".join(["river"] * 20)}]}
    long_prompt = {"messages": [{"role": "user", "content": " ".join(["tax"] * 30)},
                                {"role": "assistant", "content": "cash"}]}
    no_assistant = {"messages": [{"role": "user", "content": "tree"}]}
    path = write_jsonl(tmp_path / "sft.jsonl", [long_answer, long_prompt, no_assistant, {"messages": CONVERSATION}])
    rows, stats = encode_sft_file(tokenizer, path, max_length=16)
    assert stats.conversations == 4 and stats.examples == 2
    assert stats.skipped_no_assistant == 1
    assert stats.skipped_no_target_after_truncation == 1  # the 30-word prompt leaves no room for the answer
    # long answer: 4 + 2 + 21 tokens, 11 cut (all targets); long prompt: 37 tokens, 21 cut (2 targets: cash </s>);
    # the 5-turn conversation: 24 tokens, 8 cut (its last user turn and "assistant : river </s>", 2 targets)
    assert stats.truncated_conversations == 3
    assert (stats.truncated_tokens, stats.truncated_target_tokens) == (11 + 21 + 8, 11 + 2 + 2)
    assert all(len(r["input_ids"]) <= 16 for r in rows)
    assert all(r["position_ids"] == list(range(len(r["input_ids"]))) for r in rows)
    assert stats.tokens == sum(len(r["input_ids"]) for r in rows)


def test_turns_without_a_special_end_token_are_counted(tmp_path):
    tokenizer = tiny_tokenizer("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}])
    _, stats = encode_sft_file(tokenizer, path, max_length=64)
    assert stats.assistant_turns == 2 and stats.turns_without_special_end_token == 2


def test_no_chat_template_is_a_clear_error():
    with pytest.raises(ModelError, match="no chat template"):
        require_chat_template(tiny_tokenizer(chat_template=None), "models/base")


def test_template_that_is_not_prefix_consistent_names_the_line(tmp_path):
    tokenizer = tiny_tokenizer("{% for m in messages %}{% if loop.last %}tax {% endif %}{{ m['content'] }} "
                               "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}])
    with pytest.raises(DataError, match=r"sft.jsonl:1: .*not prefix-consistent"):
        encode_sft_file(tokenizer, path, max_length=64)


@pytest.mark.parametrize("line, message", [
    ({"text": "a corpus line"}, r"sft.jsonl:2: expected \{\"messages\""),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"sft.jsonl:2: message 0 must be"),
    ({"messages": [{"role": "user", "content": 3}]}, r"sft.jsonl:2: message 0 must be"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}, line])
    with pytest.raises(DataError, match=message):
        encode_sft_file(tiny_tokenizer(), path, max_length=64)


def test_a_directory_is_not_sft_data(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        encode_sft_file(tiny_tokenizer(), tmp_path, max_length=64)


def test_nothing_usable_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "tree"}]}])
    with pytest.raises(DataError, match="no usable conversation"):
        encode_sft_file(tiny_tokenizer(), path, max_length=64)
