"""The ``dataset:`` block of ``lm train``: each SFT shape, from its own kind of file to training rows whose targets
are the assistant turns and nothing else (decoded and compared); plain text packed for cpt; bad input through the
CLI (exit 2, one line, no run directory)."""

from __future__ import annotations

import csv
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from train_helpers import save_tiny_llama, tiny_tokenizer, train_config

from adaptlab import example_configs
from adaptlab.config import load_config, validate_config
from adaptlab.errors import ConfigError, DataError
from adaptlab.lm.dataset_block import DatasetBlock, read_sft_examples, read_texts
from adaptlab.lm.packing import IGNORE_INDEX
from adaptlab.lm.sft_data import encode_sft_dataset
from adaptlab.lm.train import LMTrainConfig, load_training_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the tiny "role : content </s>" template with tool use: the tools' names open the chat, a call is
# "call NAME KEY VALUE ..." (the transformers convention: message.tool_calls[].function.{name, arguments})
TOOL_TEMPLATE = (
    "{% if tools %}system : tools {% for t in tools %}{{ t.function.name }} {% endfor %}</s> {% endif %}"
    "{% for m in messages %}{{ m.role }} : "
    "{% for c in m.tool_calls or [] %}call {{ c.function.name }} "
    "{% for k, v in c.function.arguments | dictsort %}{{ k }} {{ v }} {% endfor %}{% endfor %}"
    "{{ m.content }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "bank", "description": "a bank's rate",
                                           "parameters": {"type": "object",
                                                          "properties": {"market": {"type": "string"}}}}}]
CALL = {"name": "bank", "arguments": {"market": "stock"}}
TOOL_CHAT = {"tools": TOOLS, "messages": [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "bond rate ."},
    {"role": "assistant", "content": None,  # OpenAI's shape: no content, the arguments as a JSON string
     "tool_calls": [{"id": "c1", "type": "function",
                     "function": {"name": "bank", "arguments": '{"market": "stock"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "river snow"},
    {"role": "assistant", "content": "cash tax ."},
]}
TOOL_TARGETS = ["call bank market stock </s>", "cash tax . </s>"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(TOOL_TEMPLATE, extra_words=("tool", "tools", "call"))


def target_runs(tokenizer, row) -> list[str]:
    """The target tokens of a row as text, one string per contiguous stretch (one assistant turn each)."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    runs += [current] if current else []
    return [" ".join(tokenizer.convert_ids_to_tokens(run)) for run in runs]


def text_of(tokenizer, row) -> str:
    return " ".join(tokenizer.convert_ids_to_tokens(row["input_ids"]))


def encode(tokenizer, **block) -> list[dict]:
    return encode_sft_dataset(tokenizer, DatasetBlock(**block), max_length=256)[0]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# ------------------------------------------------------------------------------------------------ round trips


def test_messages_with_tools_from_jsonl_and_a_saved_dataset(tokenizer, tmp_path):
    plain = {"messages": [{"role": "user", "content": "tree ."}, {"role": "assistant", "content": "leaf ."}]}
    rows = encode(tokenizer, path=write_jsonl(tmp_path / "chat.jsonl", [TOOL_CHAT, plain]), format="messages")
    assert target_runs(tokenizer, rows[0]) == TOOL_TARGETS  # the tool's result and the user turn are not targets
    assert text_of(tokenizer, rows[0]).startswith("system : tools bank </s> system : be brief </s>")
    assert "tool : river snow </s>" in text_of(tokenizer, rows[0])
    assert target_runs(tokenizer, rows[1]) == ["leaf . </s>"]
    # the same records through Arrow (save_to_disk adds every missing key as null): the same rows
    datasets.Dataset.from_list([TOOL_CHAT, plain]).save_to_disk(str(tmp_path / "saved"))
    assert encode(tokenizer, path=str(tmp_path / "saved")) == rows


def test_a_template_that_drops_tool_calls_is_refused(tmp_path):
    no_tools = tiny_tokenizer(extra_words=("tool", "call"))  # "role : content </s>": the calls would vanish
    with pytest.raises(DataError, match="chat.jsonl:1: the chat template does not render the tool calls of "
                                        "assistant message 2"):
        encode(no_tools, path=write_jsonl(tmp_path / "chat.jsonl", [TOOL_CHAT]))


def test_message_weights_keep_working_from_a_json_file_with_mapped_columns(tokenizer, tmp_path):
    conversation = [{"role": "user", "content": "bond ."},
                    {"role": "assistant", "content": "rate bank . snow", "weights": [
                        {"start": 0, "end": 11, "weight": 0.5}]},
                    {"role": "user", "content": "tree ."},
                    {"role": "assistant", "content": "cash tax", "token_weights": [0.25, 0.75]}]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"data": [{"id": 1, "conversation": conversation}]}))
    row = encode(tokenizer, path=str(path), columns={"messages": "conversation"})[0]
    assert target_runs(tokenizer, row) == ["rate bank . snow </s>", "cash tax </s>"]
    weights = [w for w, label in zip(row["weights"], row["labels"], strict=True) if label != IGNORE_INDEX]
    assert weights == [0.5, 0.5, 0.5, 1.0, 1.0, 0.25, 0.75, 1.0]


def test_sharegpt_with_function_calls_and_a_mapped_role_equals_its_messages(tokenizer, tmp_path):
    record = {"system": "be brief", "tools": json.dumps(TOOLS), "conversations": [
        {"from": "human", "value": "bond rate ."},
        {"from": "function_call", "value": json.dumps(CALL)},
        {"from": "observation", "value": "river snow"},
        {"from": "gpt", "value": "cash tax ."},
        {"from": "human", "value": "tree ."},
        {"from": "bot", "value": "leaf ."}]}
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([record]))
    row = encode(tokenizer, path=str(path), format="sharegpt", roles={"bot": "assistant"})[0]
    assert target_runs(tokenizer, row) == [*TOOL_TARGETS, "leaf . </s>"]
    as_messages = {**TOOL_CHAT, "messages": [*TOOL_CHAT["messages"], {"role": "user", "content": "tree ."},
                                             {"role": "assistant", "content": "leaf ."}]}
    assert encode(tokenizer, path=write_jsonl(tmp_path / "messages.jsonl", [as_messages]))[0] == row


def test_alpaca_from_csv_with_mapped_columns_input_and_history(tokenizer, tmp_path):
    path = tmp_path / "alpaca.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "input", "answer", "history"])
        writer.writerow(["bond rate", "market", "cash tax .", json.dumps([["tree", "leaf ."]])])
        writer.writerow(["stock", "", "river .", ""])
    rows = encode(tokenizer, path=str(path), format="alpaca", columns={"instruction": "question", "output": "answer"})
    assert [target_runs(tokenizer, row) for row in rows] == [["leaf . </s>", "cash tax . </s>"], ["river . </s>"]]
    assert text_of(tokenizer, rows[0]).startswith("user : tree </s> assistant : leaf . </s> user : bond rate market")


def test_prompt_completion_from_parquet_needs_no_chat_template(tmp_path):
    base = tiny_tokenizer(chat_template=None)
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "bond rate :", "answer": " river snow ."}]), path)
    row = encode(base, path=str(path), format="prompt_completion",
                 columns={"prompt": "question", "completion": "answer"})[0]
    assert target_runs(base, row) == ["river snow . </s>"]  # the completion and its EOS
    assert text_of(base, row) == "<s> bond rate : river snow . </s>"


def test_auto_tells_each_records_shape(tokenizer, tmp_path):
    records = [{"messages": [{"role": "user", "content": "tree"}, {"role": "assistant", "content": "cash ."}]},
               {"conversations": [{"from": "human", "value": "tree"}, {"from": "gpt", "value": "cash ."}]},
               {"instruction": "tree", "output": "cash ."},
               {"prompt": "tree", "completion": " cash ."}]
    rows = encode(tokenizer, path=write_jsonl(tmp_path / "mixed.jsonl", records))
    assert [target_runs(tokenizer, row) for row in rows] == [["cash . </s>"]] * 4
    assert len({tuple(row["input_ids"]) for row in rows[:3]}) == 1  # three chat shapes, one conversation


def test_plain_text_is_packed_for_cpt(tmp_path):
    tokenizer = tiny_tokenizer()
    documents = ["bond rate bank loan .", "river snow bird .", "tree leaf rain wind cloud stone ."]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": documents}),
                          "test": datasets.Dataset.from_dict({"body": documents[:1]})}).save_to_disk(
        str(tmp_path / "corpus"))
    block = {"path": str(tmp_path / "corpus"), "format": "text", "columns": {"text": "body"}}
    cfg = validate_config(LMTrainConfig, {"mode": "cpt", "dataset": block, "max_length": 8,
                                          "eval_dataset": {**block, "split": "test"}})
    data = load_training_data(cfg, tokenizer, "tiny")
    ids = [token for row in data.train for token in row["input_ids"]]
    assert " ".join(tokenizer.convert_ids_to_tokens(ids)) == " ".join(f"<s> {d} </s>" for d in documents)
    assert all(len(row["input_ids"]) <= 8 for row in data.train)
    for row in data.train:  # each document (piece) predicts all its tokens but the first
        assert row["labels"] == [IGNORE_INDEX if p == 0 else t for p, t in zip(row["position_ids"],
                                                                                row["input_ids"], strict=True)]
    assert data.stats["splits"]["train"]["documents"] == 3 and data.stats["block_size"] == 8
    assert len(data.evals["held_out"]) == 1
    with pytest.raises(ConfigError, match="dataset.format: mode cpt trains on plain text"):
        read_texts(DatasetBlock(path=str(tmp_path / "corpus"), format="alpaca"))


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("sft-formats") / "model")


def write_config(tmp_path, model, **top) -> str:
    config = train_config(model, "unused", tmp_path / "run", mode="sft", max_steps=2, save_steps=2, eval_steps=2)
    del config["data"]
    config.update(top)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_cli_trains_sft_on_sharegpt_and_cpt_on_text(model, tmp_path, run_cli):
    turns = [{"from": "human", "value": "bond rate"}, {"from": "gpt", "value": "river snow ."}]
    data = write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": turns}] * 8)
    config = write_config(tmp_path, model, dataset={"path": data, "format": "sharegpt"}, eval_dataset=data)
    code, _, err = run_cli("lm", "train", config)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"] == data and metrics["data_stats"]["train"]["target_tokens"] == 8 * 4
    assert "final_eval_held_out_perplexity" in metrics

    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "bond rate bank loan ."}] * 8)
    config = write_config(tmp_path, model, mode="cpt", dataset={"path": text, "format": "text"}, max_length=16)
    code, _, err = run_cli("lm", "train", config, f"output={tmp_path / 'cpt'}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "cpt" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["data_stats"]["splits"]["train"]["tokens"] == 8 * 7


def bad_inputs(tmp_path) -> dict[str, tuple[dict, list[str]]]:
    """name -> (config keys, what the one-line error must say)."""
    good = [{"from": "human", "value": "bond"}, {"from": "gpt", "value": "rate"}]
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": good},
                                                         {"conversations": [good[0], {"from": "bot", "value": "x"}]}])
    fine = write_jsonl(tmp_path / "fine.jsonl", [{"conversations": good}])
    turns = write_jsonl(tmp_path / "turns.jsonl", [{"id": 1, "turns": []}])
    (tmp_path / "empty.jsonl").write_text("")
    return {
        "missing column": ({"dataset": {"path": turns, "columns": {"messages": "conversation"}}},
                           ["turns.jsonl: dataset.columns.messages: there is no column 'conversation'",
                            "(the columns are id, turns)"]),
        "unknown sharegpt role": ({"dataset": {"path": sharegpt, "format": "sharegpt"}},
                                  ["sharegpt.jsonl:2: conversations[1].from = 'bot' is not a ShareGPT role",
                                   "map it with dataset.roles"]),
        "unknown format": ({"dataset": {"path": sharegpt, "format": "chatml"}}, ["dataset.format: Input should be"]),
        "empty file": ({"dataset": str(tmp_path / "empty.jsonl")}, ["empty.jsonl: file is empty"]),
        "offline hub name": ({"dataset": "someone/no-such-dataset"},
                             ["'someone/no-such-dataset' is not a local file or folder", "(HF_HUB_OFFLINE=1)"]),
        "old and new form": ({"dataset": sharegpt, "data": sharegpt}, ["keep 'dataset'", "remove 'data'"]),
        "text for sft": ({"dataset": {"path": sharegpt, "format": "text"}}, ["dataset.format: text is plain text"]),
        "split of a file": ({"eval_dataset": {"path": fine, "split": "test"}, "dataset": fine},
                            ["eval_dataset.split:", "is a file"]),
    }


@pytest.mark.parametrize("case", ["missing column", "unknown sharegpt role", "unknown format", "empty file",
                                  "offline hub name", "old and new form", "text for sft", "split of a file"])
def test_bad_input_is_one_line_exit_2_and_no_run(case, model, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    keys, expected = bad_inputs(tmp_path)[case]
    code, _, err = run_cli("lm", "train", write_config(tmp_path, model, **keys))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(text in err for text in expected), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("block, error, message", [
    ({"path": "x.jsonl", "format": "alpaca", "columns": {"messages": "chat"}}, ConfigError,
     "'messages' is not a field of format alpaca"),
    ({"path": "x.jsonl", "roles": {"bot": "robot"}}, ConfigError, "maps to no role"),
])
def test_block_mistakes_are_config_errors(block, error, message):
    with pytest.raises(error, match=message):
        validate_config(LMTrainConfig, {"mode": "sft", "dataset": block})


@pytest.mark.parametrize("content, message", [
    ('{"rows": [1]}', r'chat.json: a JSON file holds a list of records or \{"data": \[...\]\}'),
    ('[{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "bank", "arguments": "{no"}}]}]}]',
     r"chat.json row 1: message 0: tool call 0 arguments is a string but not JSON"),
    ('[{"messages": [{"role": "user", "content": "x", "tool_calls": []}]}]', r"row 1: message 0 \(user\) has "
                                                                             "tool_calls"),
    ('[{"instruction": "x", "output": "y", "history": [["only one"]]}]', r"row 1: history\[0\] must be a \[user"),
])
def test_malformed_records_name_where(tmp_path, content, message):
    (tmp_path / "chat.json").write_text(content)
    with pytest.raises(DataError, match=message):
        read_sft_examples(DatasetBlock(path=str(tmp_path / "chat.json")))


def test_the_shipped_sft_config_uses_the_dataset_block():
    cfg = load_config(LMTrainConfig, example_configs.root() / "lm_sft.yaml")
    assert cfg.dataset is not None and cfg.data is None and cfg.eval_dataset is not None


def test_hub_names_go_to_load_dataset_and_its_failure_is_one_line(tokenizer, monkeypatch):
    """No network here: ``datasets.load_dataset`` is replaced, to see what it is asked and what its failure becomes."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    asked = []

    def load_dataset(name, subset, split):
        asked.append((name, subset, split))
        if name == "someone/unreachable":
            raise ConnectionError("Couldn't reach 'someone/unreachable' on the Hub (LocalEntryNotFoundError)\nmore")
        return datasets.Dataset.from_list([TOOL_CHAT])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    row = encode(tokenizer, path="someone/chats", subset="tools", split="test")[0]
    assert asked == [("someone/chats", "tools", "test")] and target_runs(tokenizer, row) == TOOL_TARGETS
    with pytest.raises(DataError, match=r"^'someone/unreachable' is not a local file or folder, and loading it from "
                                        r"the hub failed: Couldn't reach .*Error\)$"):
        encode(tokenizer, path="someone/unreachable")
