"""SFT encoding: chat template rendering, loss on assistant tokens (with end of turn) only, truncation counted;
plain prompt/completion examples; loss weights per span and per token, validated."""

from __future__ import annotations

import json

import pytest
from train_helpers import tiny_tokenizer

from adaptlab.errors import DataError, ModelError
from adaptlab.lm.packing import PackedCollator
from adaptlab.lm.sft_data import (
    IGNORE_INDEX,
    encode_example,
    encode_examples,
    encode_sft_dataset,
    require_chat_template,
)
from adaptlab.lm.sft_examples import parse_example

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


def encode_conversation(tokenizer, messages):
    encoded = encode_example(tokenizer, parse_example({"messages": messages}))
    return encoded.input_ids, encoded.labels, encoded.has_end


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
    rows, stats = encode_sft_dataset(tokenizer, path, max_length=16)
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
    _, stats = encode_sft_dataset(tokenizer, path, max_length=64)
    assert stats.assistant_turns == 2 and stats.turns_without_special_end_token == 2


def test_no_chat_template_is_a_clear_error():
    with pytest.raises(ModelError, match="no chat template"):
        require_chat_template(tiny_tokenizer(chat_template=None), "models/base")


def test_template_that_is_not_prefix_consistent_names_the_line(tmp_path):
    tokenizer = tiny_tokenizer("{% for m in messages %}{% if loop.last %}tax {% endif %}{{ m['content'] }} "
                               "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}])
    with pytest.raises(DataError, match=r"sft.jsonl:1: .*not prefix-consistent"):
        encode_sft_dataset(tokenizer, path, max_length=64)


@pytest.mark.parametrize("line, message", [
    ({"text": "a corpus line"}, r"sft.jsonl:2: a plain 'text' record has no response to learn"),
    ({"id": 7}, r"sft.jsonl:2: cannot tell the format of this record from its fields \(id\)"),
    ({"prompt": "a", "completion": 3}, r"sft.jsonl:2: a plain example is"),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"sft.jsonl:2: message 0 must be"),
    ({"messages": [{"role": "user", "content": 3}]}, r"sft.jsonl:2: message 0 must be"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}, line])
    with pytest.raises(DataError, match=message):
        encode_sft_dataset(tiny_tokenizer(), path, max_length=64)


def test_a_directory_is_not_sft_data(tmp_path):
    with pytest.raises(DataError, match="is a folder but not one written by datasets' save_to_disk"):
        encode_sft_dataset(tiny_tokenizer(), tmp_path, max_length=64)


def test_nothing_usable_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "tree"}]}])
    with pytest.raises(DataError, match="no usable example"):
        encode_sft_dataset(tiny_tokenizer(), path, max_length=64)


# ------------------------------------------------------------------------------------------------ loss weights

WEIGHTED = "rate bank. snow loan credit. river"  # spans: "rate bank." [0, 10) and "loan credit." [16, 28)


def weighted_targets(tokenizer, example) -> list[tuple[str, float]]:
    """(token, weight) of every target of one example; non-targets must have weight 0."""
    encoded = encode_example(tokenizer, parse_example(example))
    assert all(w == 0.0 for label, w in zip(encoded.labels, encoded.weights) if label == IGNORE_INDEX)
    return [(tokenizer.convert_ids_to_tokens(t), w)
            for t, label, w in zip(encoded.input_ids, encoded.labels, encoded.weights) if label != IGNORE_INDEX]


def chat(content: str, **weights) -> dict:
    return {"messages": [{"role": "user", "content": "bond"}, {"role": "assistant", "content": content, **weights}]}


def test_span_weights_follow_the_first_span_ending_after_each_token():
    spans = [{"start": 0, "end": 10, "weight": 0.5}, {"start": 16, "end": 28, "weight": 2.0}]
    assert weighted_targets(tiny_tokenizer(), chat(WEIGHTED, weights=spans)) == [
        ("rate", 0.5), ("bank", 0.5), (".", 0.5),
        ("snow", 2.0),  # between the spans: the following span's weight
        ("loan", 2.0), ("credit", 2.0), (".", 2.0),
        ("river", 1.0), ("</s>", 1.0)]  # after the last span, and the end of turn: 1


def test_zero_weight_tokens_are_not_targets_and_a_wholly_zero_turn_loses_its_end():
    tokenizer = tiny_tokenizer()
    half = [{"start": 0, "end": 10, "weight": 0.0}, {"start": 16, "end": 28, "weight": 1.0}]
    assert weighted_targets(tokenizer, chat(WEIGHTED, weights=half)) == [
        ("snow", 1.0), ("loan", 1.0), ("credit", 1.0), (".", 1.0), ("river", 1.0), ("</s>", 1.0)]
    conversation = {"messages": [*CONVERSATION[:3], {"role": "user", "content": "snow"},
                                 {"role": "assistant", "content": "river", "weights": [
                                     {"start": 0, "end": 5, "weight": 0.0}]}]}
    assert [t for t, _ in weighted_targets(tokenizer, conversation)] == ["rate", "bank", "loan", "</s>"]
    rows, stats = encode_examples(tokenizer, [parse_example(chat("river", token_weights=[0.0]))], 64)
    assert rows == [] and stats.skipped_all_weights_zero == 1


def test_token_weights_give_one_weight_per_content_token(tmp_path):
    tokenizer = tiny_tokenizer()
    assert weighted_targets(tokenizer, chat("rate bank. river", token_weights=[0.1, 0.2, 0.3, 0.4])) == [
        ("rate", 0.1), ("bank", 0.2), (".", 0.3), ("river", 0.4), ("</s>", 1.0)]
    path = write_jsonl(tmp_path / "sft.jsonl", [chat("rate bank. river", token_weights=[1, 1, 1])])
    with pytest.raises(DataError, match="sft.jsonl:1: 3 token_weights, but the content is 4 tokens"):
        encode_sft_dataset(tokenizer, path, max_length=64)


def test_weights_are_placed_in_a_trimmed_content_and_refused_in_a_changed_one(tmp_path):
    trimming = tiny_tokenizer("{% for m in messages %}{{ m['role'] }} : {{ m['content'] | trim }} </s> {% endfor %}"
                              "{% if add_generation_prompt %}assistant : {% endif %}")
    spans = [{"start": 2, "end": 12, "weight": 0.5}]  # "rate bank." after two spaces
    assert weighted_targets(trimming, chat("  rate bank. river ", weights=spans)) == [
        ("rate", 0.5), ("bank", 0.5), (".", 0.5), ("river", 1.0), ("</s>", 1.0)]
    shouting = tiny_tokenizer("{% for m in messages %}{{ m['role'] }} : {{ m['content'] | upper }} </s> "
                              "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
    path = write_jsonl(tmp_path / "sft.jsonl", [chat("rate", weights=[{"start": 0, "end": 4, "weight": 1}])])
    with pytest.raises(DataError, match="sft.jsonl:1: the chat template changes the content of assistant message 1"):
        encode_sft_dataset(shouting, path, max_length=64)


def test_rows_carry_weights_only_when_the_file_has_some(tmp_path):
    tokenizer = tiny_tokenizer()
    plain, _ = encode_sft_dataset(tokenizer, write_jsonl(tmp_path / "plain.jsonl", [{"messages": CONVERSATION}]), 64)
    assert "weights" not in plain[0]
    mixed = [{"messages": CONVERSATION}, chat(WEIGHTED, weights=[{"start": 0, "end": 10, "weight": 0.25}])]
    rows, stats = encode_sft_dataset(tokenizer, write_jsonl(tmp_path / "mixed.jsonl", mixed), 64)
    unweighted, weighted = rows
    assert all(w == (1.0 if label != IGNORE_INDEX else 0.0)
               for label, w in zip(unweighted["labels"], unweighted["weights"]))
    assert stats.target_tokens == 6 + 9 and stats.zero_weight_tokens == 0
    assert stats.weight_sum == pytest.approx(6 + 3 * 0.25 + 6)
    batch = PackedCollator(0)(rows)
    assert batch["weights"].dtype.is_floating_point and batch["weights"].shape == batch["labels"].shape
    shorter = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    assert batch["weights"][shorter, len(rows[shorter]["input_ids"]):].sum() == 0  # padding weighs 0
    assert "weights" not in PackedCollator(0)(plain)


@pytest.mark.parametrize("message, error", [
    ({"weights": [{"start": 0, "end": 4, "weight": 1}], "token_weights": [1]}, "has both 'weights'"),
    ({"weights": [{"start": 0, "end": 6, "weight": 1}, {"start": 4, "end": 8, "weight": 1}]}, "overlapping"),
    ({"weights": [{"start": 0, "end": 99, "weight": 1}]}, r"\[0, 99\) is out of order.*length 16"),
    ({"weights": [{"start": 0, "end": 4, "weight": -1}]}, "-1 is not a finite number >= 0"),
    ({"weights": [{"start": 0, "end": 4}]}, r"weights\[0\] must be"),
    ({"weights": {"start": 0}}, "'weights' must be a list"),
    ({"token_weights": ["high"]}, "'token_weights' must be a list of finite numbers"),
])
def test_malformed_weights_name_file_line_and_message(tmp_path, message, error):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}, chat("rate bank. river", **message)])
    with pytest.raises(DataError, match=rf"sft.jsonl:2: message 1.*{error}"):
        encode_sft_dataset(tiny_tokenizer(), path, max_length=64)


def test_weights_on_a_user_message_are_refused(tmp_path):
    line = {"messages": [{"role": "user", "content": "bond", "weights": [{"start": 0, "end": 4, "weight": 1}]},
                         {"role": "assistant", "content": "rate"}]}
    with pytest.raises(DataError, match="sft.jsonl:1: message 0 .user. has weights, but only assistant messages"):
        encode_sft_dataset(tiny_tokenizer(), write_jsonl(tmp_path / "sft.jsonl", [line]), max_length=64)


# ------------------------------------------------------------------------------------------------ plain examples


def test_plain_examples_are_bos_prompt_completion_eos_without_a_chat_template(tmp_path):
    tokenizer = tiny_tokenizer(chat_template=None)
    example = {"prompt": "bond yield :", "completion": " rate bank. river",
               "weights": [{"start": 1, "end": 11, "weight": 0.3}]}
    encoded = encode_example(tokenizer, parse_example(example))
    assert tokenizer.convert_ids_to_tokens(encoded.input_ids) == [
        "<s>", "bond", "yield", ":", "rate", "bank", ".", "river", "</s>"]
    assert weighted_targets(tokenizer, example) == [("rate", 0.3), ("bank", 0.3), (".", 0.3), ("river", 1.0),
                                                    ("</s>", 1.0)]
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "bond", "completion": " rate"}])
    rows, stats = encode_sft_dataset(tokenizer, path, max_length=64)  # no chat template needed
    assert stats.examples == 1 and stats.turns_without_special_end_token == 0
    with pytest.raises(ModelError, match="no chat template"):
        encode_sft_dataset(tokenizer, write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}]), 64)


def test_plain_examples_end_with_sep_when_the_tokenizer_has_no_eos(tokenizer):
    """MiniLM's WordPiece tokenizer: no BOS, no EOS, so [SEP] ends the completion (as for a CPT document)."""
    targets = weighted_targets(tokenizer, {"prompt": "Question? ", "completion": "Yes."})
    assert targets == [("yes", 1.0), (".", 1.0), ("[SEP]", 1.0)]
