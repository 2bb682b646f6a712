"""``adaptlab lm prepare`` end to end on tiny corpora: layout, accounting, no leakage, splitting, cache, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from adaptlab import example_configs
from adaptlab.config import load_config, validate_config
from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.lm.packing import IGNORE_INDEX, encode_document
from adaptlab.lm.prepared import load_prepared
from adaptlab.metrics.lm import read_text_file
from adaptlab.recipes.lm_prepare import PrepareConfig, prepare

FINANCE = "market bank rate yield bond equity asset fund loan credit risk price cash debt tax profit".split()
GENERAL = "the cat sat on a mat while dogs ran in parks with children playing games under trees".split()


def write_corpora(folder: Path, domain_docs: int = 30, general_docs: int = 20, seed: int = 0) -> dict[str, list[str]]:
    """A JSONL domain corpus and a paragraph text general corpus; every document unique."""
    rng = random.Random(seed)
    domain = [f"report {i} " + " ".join(rng.choice(FINANCE) for _ in range(rng.randint(10, 40)))
              for i in range(domain_docs)]
    general = [f"story {i} " + " ".join(rng.choice(GENERAL) for _ in range(rng.randint(10, 30)))
               for i in range(general_docs)]
    (folder / "domain.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in domain))
    (folder / "general.txt").write_text("\n\n".join(general) + "\n")
    return {"domain": domain, "general": general}


def make_config(tokenizer_dir: Path, **overrides) -> PrepareConfig:
    data = {
        "tokenizer": str(tokenizer_dir), "block_size": 32, "eval_documents": 3, "replay_ratio": 0.2,
        "sources": [{"name": "news", "path": "general.txt", "role": "general"},
                    {"name": "finance", "path": "domain.jsonl", "role": "domain"}],
        "cache_dir": "cache", "progress": False,
    }
    data.update(overrides)
    return validate_config(PrepareConfig, data)


def subsequence_in(needle: list[int], haystack: list[int]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def test_prepare_writes_the_prepared_corpus(tmp_path, tokenizer_dir, tokenizer):
    write_corpora(tmp_path)
    run, metrics = prepare(make_config(tokenizer_dir, output="run"))
    corpus = load_prepared(run.path)
    assert corpus.block_size == 32 and corpus.tokenizer == str(Path(tokenizer_dir).resolve())
    assert set(corpus.manifest["splits"]) == {"train", "eval_domain", "eval_general"}
    for name in ("train", "eval_domain", "eval_general"):
        split = getattr(corpus, name)
        assert split.column_names == ["input_ids", "position_ids", "labels"]
        assert corpus.manifest["splits"][name]["rows"] == len(split)
        assert corpus.manifest["splits"][name]["tokens"] == sum(len(r) for r in split["input_ids"])
        assert all(len(r) <= 32 for r in split["input_ids"])
    row = corpus.train[0]
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    assert all(row["labels"][i] == IGNORE_INDEX for i in starts)

    # Held-out documents: 3 per role, in the text files, and their tokens exactly the eval split's.
    domain_eval = read_text_file(corpus.eval_domain_text)
    general_eval = read_text_file(corpus.eval_general_text)
    assert len(domain_eval) == 3 and len(general_eval) == 3
    assert sum(len(encode_document(tokenizer, d)) for d in domain_eval) == metrics["splits"]["eval_domain"]["tokens"]

    # Accounting: every document read is kept or removed with a reason; train = domain + replayed general.
    finance = metrics["sources"]["finance"]
    assert finance["documents_read"] == 30 and finance["documents"] == 30
    assert finance["train_documents"] == 27 and finance["eval_documents"] == 3
    train = metrics["splits"]["train"]
    assert train["tokens"] == train["domain_tokens"] + train["general_tokens"]
    assert train["domain_tokens"] == finance["train_tokens"]
    assert metrics["replay"]["ratio_achieved"] == pytest.approx(0.2, abs=0.05)
    for name in ("config.yaml", "metrics.json", "report.html", "log.txt"):
        assert (run.path / name).is_file()
    assert not (run.path / ".staging").exists()
    report = run.report.read_text()
    assert "Filtered documents" in report and "Replay" in report and "split, not cut" in report


def test_held_out_documents_never_reach_train_even_when_duplicated(tmp_path, tokenizer_dir, tokenizer):
    docs = write_corpora(tmp_path, domain_docs=12)["domain"]
    # Copies of every document (exact, and near: one word changed) are removed before the split.
    near = [d.replace("report", "Report", 1) + " end" for d in docs]
    with (tmp_path / "domain.jsonl").open("a") as fh:
        for text in docs + near:
            fh.write(json.dumps({"text": text}) + "\n")
    cfg = make_config(tokenizer_dir, block_size=64, split_across_blocks=False, replay_ratio=0, output="run",
                      dedup={"threshold": 0.5, "shingle_size": 2})
    run, metrics = prepare(cfg)
    finance = metrics["sources"]["finance"]
    assert finance["exact_duplicates"] == 12 and finance["near_duplicates"] == 12 and finance["documents"] == 12
    corpus = load_prepared(run.path)
    train_rows = corpus.train["input_ids"]
    for text in read_text_file(corpus.eval_domain_text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert not any(subsequence_in(ids, row) for row in train_rows)
    assert "Duplicates" in run.report.read_text()


def test_long_documents_are_split_not_cut_and_counted(tmp_path, tokenizer_dir, tokenizer):
    write_corpora(tmp_path, domain_docs=6)
    long_doc = "annual report " + " ".join(FINANCE * 6)  # ~100 tokens, more than 3 blocks of 32
    with (tmp_path / "domain.jsonl").open("a") as fh:
        fh.write(json.dumps({"text": long_doc}) + "\n")
    run, metrics = prepare(make_config(tokenizer_dir, eval_documents=1, replay_ratio=0, output="run",
                                       sources=[{"name": "finance", "path": "domain.jsonl"}]))
    assert metrics["sources"]["finance"]["longer_than_block"] >= 1
    assert metrics["long_documents"]["longer_than_block"] >= 1
    assert metrics["long_documents"]["split_documents"] >= metrics["long_documents"]["longer_than_block"]
    assert metrics["long_documents"]["truncated_documents"] == 0
    # No token is lost: packed tokens equal the documents' encoded lengths.
    documents = [json.loads(line)["text"] for line in (tmp_path / "domain.jsonl").read_text().splitlines()]
    expected = sum(len(encode_document(tokenizer, d)) for d in documents)
    assert metrics["splits"]["train"]["tokens"] + metrics["splits"]["eval_domain"]["tokens"] == expected
    assert "eval_general" not in metrics["splits"]
    corpus = load_prepared(run.path)
    assert corpus.eval_general is None and corpus.eval_general_text is None


def test_filters_and_cleaning_are_counted_by_reason(tmp_path, tokenizer_dir):
    write_corpora(tmp_path, domain_docs=8)
    with (tmp_path / "domain.jsonl").open("a") as fh:
        for text in ["tiny", "We use cookies.", "", "12 34 56 78 90 12 34 56 78 90 xx"]:
            fh.write(json.dumps({"text": text}) + "\n")
    _, metrics = prepare(make_config(tokenizer_dir, replay_ratio=0, eval_documents=1, output="run"))
    assert metrics["filtered_by_reason"] == {"too_few_chars": 1, "boilerplate": 1, "empty": 1,
                                             "too_few_alphabetic": 1}
    assert metrics["documents"] == {"read": 32, "filtered": 4, "exact_duplicates": 0, "near_duplicates": 0,
                                    "kept": 28}


def test_same_seed_same_data_and_the_tokenisation_cache(tmp_path, tokenizer_dir):
    write_corpora(tmp_path)
    first_run, first = prepare(make_config(tokenizer_dir, output="a"))
    second_run, second = prepare(make_config(tokenizer_dir, output="b"))
    assert not first["cache"]["hit"] and second["cache"]["hit"]
    a, b = load_prepared(first_run.path), load_prepared(second_run.path)
    assert a.train["input_ids"] == b.train["input_ids"]
    assert (first_run.path / "text" / "eval_domain.txt").read_text() == (second_run.path / "text" /
                                                                          "eval_domain.txt").read_text()
    other_run, other = prepare(make_config(tokenizer_dir, output="c", seed=1))
    assert not other["cache"]["hit"]  # another split means other documents in another order
    assert load_prepared(other_run.path).train["input_ids"] != a.train["input_ids"]
    _, uncached = prepare(make_config(tokenizer_dir, output="d", tokenization_cache=False))
    assert uncached["cache"] == {"enabled": False, "key": first["cache"]["key"]}


def test_two_tokenising_processes_give_the_same_corpus(tmp_path, tokenizer_dir):
    write_corpora(tmp_path)
    one_run, _ = prepare(make_config(tokenizer_dir, output="one", tokenization_cache=False))
    two_run, _ = prepare(make_config(tokenizer_dir, output="two", num_proc=2, tokenization_cache=False))
    assert load_prepared(one_run.path).train["input_ids"] == load_prepared(two_run.path).train["input_ids"]


def test_cli_prepare_and_its_errors(tmp_path, tokenizer_dir, run_cli):
    write_corpora(tmp_path)
    config = make_config(tokenizer_dir).model_dump(mode="json")
    (tmp_path / "prep.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_cli("lm", "prepare", "prep.yaml", "seed=3", "--output", "cli-run")
    assert code == 0, err
    assert "prepared corpus" in out and (tmp_path / "cli-run" / "data" / "manifest.json").is_file()
    assert json.loads((tmp_path / "cli-run" / "metrics.json").read_text())["splits"]["eval_domain"]["rows"] >= 1
    code, _, err = run_cli("lm", "prepare", "prep.yaml", "cleaning.min_lenght=3", "--output", "bad")
    assert code == 2 and "unknown key 'cleaning.min_lenght'" in err and not (tmp_path / "bad").exists()


def test_bad_input_is_a_clear_error_and_creates_no_run(tmp_path, tokenizer_dir):
    write_corpora(tmp_path)
    with pytest.raises(ConfigError, match="unknown key 'block'"):
        load_config(PrepareConfig, None, [f"tokenizer={tokenizer_dir}", "sources=[]", "block=5"])
    with pytest.raises(ConfigError, match="replay_ratio=0.2 needs a source with role: general"):
        make_config(tokenizer_dir, sources=[{"name": "finance", "path": "domain.jsonl"}])
    with pytest.raises(ConfigError, match="names must be unique, repeated: finance"):
        make_config(tokenizer_dir, sources=[{"name": "finance", "path": "domain.jsonl"},
                                            {"name": "finance", "path": "general.txt", "role": "general"}])
    with pytest.raises(ConfigError, match="at least one source needs role: domain"):
        make_config(tokenizer_dir, replay_ratio=0, sources=[{"name": "n", "path": "general.txt", "role": "general"}])
    with pytest.raises(DataError, match="source 'finance': file or folder not found"):
        prepare(make_config(tokenizer_dir, sources=[{"name": "finance", "path": "missing.jsonl"},
                                                    {"name": "news", "path": "general.txt", "role": "general"}]))
    (tmp_path / "broken.jsonl").write_text('{"text": "fine text that is long enough"}\n{"txt": "typo"}\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2: no 'text' field \(keys: txt\)"):
        prepare(make_config(tokenizer_dir, replay_ratio=0, sources=[{"name": "b", "path": "broken.jsonl"}]))
    with pytest.raises(ModelError, match="tokenizer: cannot load"):
        prepare(make_config(tmp_path / "no-tokenizer"))
    assert not (tmp_path / "runs").exists()


def test_empty_corpus_after_filtering_says_what_removed_it(tmp_path, tokenizer_dir):
    write_corpora(tmp_path, domain_docs=5)
    with pytest.raises(DataError) as caught:
        prepare(make_config(tokenizer_dir, replay_ratio=0, cleaning={"min_chars": 10_000}))
    message = str(caught.value)
    assert "domain sources (finance) have 0 document(s) left of 5 read" in message
    assert "too_few_chars 5" in message and "cleaning" in message
    (tmp_path / "dups.jsonl").write_text((json.dumps({"text": "the same words again and again"}) + "\n") * 4)
    with pytest.raises(DataError, match="1 document\\(s\\) left of 4 read \\(removed: exact 3\\)"):
        prepare(make_config(tokenizer_dir, replay_ratio=0, eval_documents=1,
                            sources=[{"name": "d", "path": "dups.jsonl"}]))
    assert not (tmp_path / "runs").exists()


def test_load_prepared_names_what_is_missing(tmp_path, tokenizer_dir):
    with pytest.raises(DataError, match="prepared corpus not found"):
        load_prepared(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data/manifest.json"):
        load_prepared(tmp_path / "empty")
    write_corpora(tmp_path)
    run, _ = prepare(make_config(tokenizer_dir, output="run"))
    assert load_prepared(run.path / "data").path == run.path  # the data/ folder works too
    import shutil

    shutil.rmtree(run.path / "data" / "eval_general")
    with pytest.raises(DataError, match="split 'eval_general' is missing"):
        load_prepared(run.path)


def test_example_config_runs_on_the_demo_corpora(tmp_path, tokenizer_dir, monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the example's source paths are relative to the repository
    cfg = load_config(PrepareConfig, example_configs.path("lm_prepare"),
                      [f"tokenizer={tokenizer_dir}", "block_size=256", "progress=false",
                       f"cache_dir={tmp_path / 'cache'}"], {"output": str(tmp_path / "run")})
    run, metrics = prepare(cfg)
    assert metrics["documents"]["kept"] > 1000 and metrics["long_documents"]["truncated_documents"] == 0
    assert metrics["replay"]["ratio_achieved"] == pytest.approx(0.05, abs=0.01)
    assert load_prepared(run.path).eval_general is not None


def test_the_tokenizer_fingerprint_ignores_truncation_and_padding_state(tmp_path, tokenizer_dir):
    """A tokenizer.json that carries truncation settings: transformers rewrites them on the first encode."""
    from transformers import AutoTokenizer

    from adaptlab.lm.prepared import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.backend_tokenizer.enable_truncation(max_length=16)
    tokenizer.backend_tokenizer.enable_padding(length=16)
    tokenizer.save_pretrained(tmp_path / "tok")
    fresh = AutoTokenizer.from_pretrained(tmp_path / "tok")
    before = tokenizer_fingerprint(fresh)
    fresh("some text to encode", truncation=False)
    assert tokenizer_fingerprint(fresh) == before == tokenizer_fingerprint(AutoTokenizer.from_pretrained(tokenizer_dir))
    fresh.add_tokens(["zorbfish"])  # a change to the ids still changes it
    assert tokenizer_fingerprint(fresh) != before
