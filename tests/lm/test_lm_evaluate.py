"""``adaptlab lm evaluate``: two saved tiny models through perplexity, MC tasks and the probe, one table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from probe_models import CHAT_TEMPLATE, transition_model
from transformers import AutoTokenizer

from adaptlab.config import validate_config
from adaptlab.errors import ConfigError, DataError, ModelError, RunDirError
from adaptlab.metrics.lm import perplexity, read_text_file
from adaptlab.recipes.lm_evaluate import LMEvalConfig, evaluate, load_causal_lm
from gguf_files import write_tiny_gguf

TEXT = "The bank raised its deposit rate.\n\nBond prices fell as yields rose sharply.\n\nA third document.\n"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    """'chat': answers 'hello' then EOS, with a chat template; 'base': a random Llama without one."""
    root = tmp_path_factory.mktemp("lm-eval-models")
    chat_tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, eos_token="[SEP]")
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    transition_model(chat_tokenizer, {"hello": "[SEP]"}, "hello").save_pretrained(root / "chat")
    chat_tokenizer.save_pretrained(root / "chat")
    base = transition_model(chat_tokenizer, {}, "hello")  # never stops; its tokenizer has no chat template
    base.save_pretrained(root / "base")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(root / "base")
    return {"chat": root / "chat", "base": root / "base"}


def make_config(model_dirs, tmp_path: Path, **extra) -> LMEvalConfig:
    (tmp_path / "domain.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "probe.jsonl").write_text('{"prompt": "What is a bond?"}\n{"prompt": "Hi!"}\n', encoding="utf-8")
    data = {
        "models": [{"name": name, "path": str(model_dirs[name])} for name in ("base", "chat")],
        "perplexity": {"texts": {"domain": str(tmp_path / "domain.txt")}, "max_length": 32, "max_documents": 2},
        "mc": {"tasks": {"sentiment": "packaged:finance_sentiment", "basics": "packaged:finance_basics"},
               "max_items": 2, "batch_size": 4},
        "probe": {"prompts": str(tmp_path / "probe.jsonl"), "max_new_tokens": 3, "examples": 1},
        "device": "cpu", "output": str(tmp_path / "run"), "progress": False, **extra,
    }
    return validate_config(LMEvalConfig, data)


def test_models_by_parts_table_metrics_predictions_and_report(model_dirs, tmp_path):
    run, metrics = evaluate(make_config(model_dirs, tmp_path))
    assert json.loads(run.metrics.read_text()) == json.loads(json.dumps(metrics))
    base, chat = metrics["table"]
    assert base["model"] == "base" and chat["model"] == "chat"
    assert list(base) == ["model", "ppl_domain", "sentiment_acc", "sentiment_acc_norm", "basics_acc",
                          "basics_acc_norm", "mc_mean_acc", "mc_mean_acc_norm", "probe_stopped",
                          "probe_chat_format", "probe_both"]
    # the base tokenizer has no chat template: probe skipped with a note, counted, blank in the table
    assert base["probe_both"] is None and "no chat template" in metrics["probe_skipped"]["base"]
    assert list(metrics["probe_skipped"]) == ["base"]
    assert (chat["probe_stopped"], chat["probe_chat_format"], chat["probe_both"]) == (1.0, 1.0, 1.0)
    assert metrics["models"]["chat"]["probe"]["examples"] == [
        {"id": "line 1", "prompt": "What is a bond?", "response": "hello", "new_tokens": 2, "stopped": True,
         "chat_format": True, "markers_found": []}]
    # perplexity is metrics.lm.perplexity on the first max_documents documents
    model, tokenizer = load_causal_lm(str(model_dirs["chat"]), "cpu")
    expected = perplexity(model, tokenizer, read_text_file(tmp_path / "domain.txt")[:2], max_length=32)
    assert chat["ppl_domain"] == pytest.approx(expected["perplexity"])
    assert metrics["inputs"]["texts"]["domain"] == {"path": str(tmp_path / "domain.txt"), "documents": 3,
                                                    "documents_used": 2}
    sentiment = metrics["models"]["chat"]["mc"]["sentiment"]
    assert sentiment["items"] == 2 and "macro_f1" in sentiment and "predictions" not in sentiment
    assert chat["mc_mean_acc"] == pytest.approx((chat["sentiment_acc"] + chat["basics_acc"]) / 2)
    predictions = (run.path / "predictions" / "chat" / "mc_basics.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in predictions] == ["fb-01", "fb-02"]
    assert len(json.loads(predictions[0])["loglikelihoods"]) == 4
    assert len((run.path / "predictions" / "chat" / "probe.jsonl").read_text().splitlines()) == 2
    assert not (run.path / "predictions" / "base" / "probe.jsonl").exists()
    report = run.report.read_text()
    for heading in ("Results", "Perplexity", "Multiple choice: sentiment", "Multiple choice: basics",
                    "Instruction-following probe", "chat: first responses"):
        assert heading in report
    assert (run.path / "config.yaml").is_file()


def test_cli_prints_the_table(model_dirs, tmp_path, run_cli):
    cfg = make_config(model_dirs, tmp_path, mc={"tasks": {}}, probe={"prompts": None})
    config_file = tmp_path / "eval.yaml"
    config_file.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")  # JSON is YAML
    code, out, err = run_cli("lm", "evaluate", config_file, "models=[{name: chat, path: " + str(model_dirs["chat"])
                             + "}]", "--output", tmp_path / "cli-run", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1 and list(rows[0]) == ["model", "ppl_domain"] and rows[0]["ppl_domain"] > 1
    assert (tmp_path / "cli-run" / "report.html").is_file()


@pytest.mark.parametrize(("change", "message"), [
    ({"models": []}, "models: give at least one model"),
    ({"models": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "names repeat"),
    ({"mc": {"tasks": {"my task": "packaged:finance_basics"}}}, "name 'my task' must use letters"),
    ({"perplexity": {"texts": {}}, "mc": {"tasks": {}}, "probe": {"prompts": None}}, "nothing to evaluate"),
    ({"mc": {"tasks": {"x": "packaged:no_such_task"}}}, "no such packaged file"),
    ({"device": "gpu:7"}, "not a torch device"),
])
def test_config_mistakes_stop_before_any_model_loads(model_dirs, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(make_config(model_dirs, tmp_path, **change))
    assert not (tmp_path / "run").exists()


def test_bad_inputs_and_models_are_reported(model_dirs, tmp_path):
    bad_task = tmp_path / "bad.jsonl"
    bad_task.write_text('{"question": "q", "choices": ["a", "b"], "answer": 5}\n', encoding="utf-8")
    missing_model = [{"name": "gone", "path": str(tmp_path / "no-model")}]
    with pytest.raises(DataError, match=r"bad.jsonl:1: answer 5 is out of range"):  # data is read before models
        evaluate(make_config(model_dirs, tmp_path, models=missing_model, mc={"tasks": {"bad": str(bad_task)}}))
    with pytest.raises(ModelError, match=r"models\[0\]\.path: .*no-model does not exist"):
        evaluate(make_config(model_dirs, tmp_path, models=missing_model))
    assert not (tmp_path / "run").exists()  # checked before the run directory is created
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("earlier run")
    with pytest.raises(RunDirError, match="already exists"):
        evaluate(make_config(model_dirs, tmp_path))


def test_a_gguf_model_and_an_lm_eval_yaml_task_run_end_to_end(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("ADAPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    model = write_tiny_gguf(tmp_path / "tiny.gguf", tensor_type="Q8_0")
    code, out, err = run_cli("lm", "export-task", "packaged:finance_basics", "--output", tmp_path / "lm-eval")
    assert code == 0 and "12 items" in out and "lm_eval --model hf" in out, err
    code, out, err = run_cli("lm", "evaluate", f"models=[{{name: tiny, path: {model}}}]",
                             f"mc.tasks={{quiz: {tmp_path / 'lm-eval' / 'finance_basics.yaml'}}}",
                             "probe.prompts=null", "--output", tmp_path / "run", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["model"] == "tiny" and 0 <= row["quiz_acc"] <= 1


def test_bad_gguf_and_task_files_exit_2_and_write_nothing(tmp_path, run_cli):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 7)
    yaml_task = tmp_path / "task.yaml"
    yaml_task.write_text("task: t\noutput_type: multiple_choice\nprocess_docs: !function utils.process\n")
    cases = [
        (("model", "import", broken, "--output", tmp_path / "out"), "broken.gguf: truncated or damaged GGUF"),
        (("lm", "evaluate", f"models=[{{name: m, path: {broken}}}]", "probe.prompts=packaged:probe_prompts",
          "--output", tmp_path / "out"), r"broken.gguf: truncated or damaged GGUF"),
        (("lm", "evaluate", "models=[{name: m, path: x}]", f"mc.tasks={{t: {yaml_task}}}", "probe.prompts=null",
          "--output", tmp_path / "out"), r"task.yaml: unsupported lm-eval task key\(s\) \['process_docs'\]"),
        (("lm", "export-task", yaml_task, "--output", tmp_path / "out"), "unsupported lm-eval task key"),
    ]
    for args, message in cases:
        code, _, err = run_cli(*args)
        assert code == 2 and re.search(message, err.replace("\n", "")), (args, err)
        assert "Traceback" not in err and not (tmp_path / "out").exists()
