"""Coefficient search with a fake merge function that writes tiny random Llamas depending on the value."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.search import SearchConfig, candidate_config, objective_text, run_search
from adaptlab.metrics.lm import perplexity, read_text_file

DOMAIN = "The patient received aspirin.\nPressure was normal.\n\nNo further treatment was needed after surgery.\n"
GENERAL = "The weather was mild and the train left on time.\n\nShe bought bread at the market.\n"


@pytest.fixture(scope="module")
def base_model(tiny_llama):
    return tiny_llama(head_scale=10).eval()


def scaled_model(base_model, value: float):
    """The 'merge' of the fake: the base with lm_head scaled by ``value`` (NaN weights for a negative value)."""
    model = copy.deepcopy(base_model)
    with torch.no_grad():
        if value < 0:
            model.lm_head.weight.fill_(math.nan)
        else:
            model.lm_head.weight.mul_(value)
    return model


class FakeMerge:
    """Writes ``scaled_model`` at ``merge_config.output``; records configs and candidate dirs seen on disk."""

    def __init__(self, base_model, tokenizer, target: str = "weight", vary: str = "instruct"):
        self.base_model, self.tokenizer, self.target, self.vary = base_model, tokenizer, target, vary
        self.configs: list[MergeConfig] = []
        self.others_on_disk: list[int] = []

    def __call__(self, merge_config: MergeConfig) -> Path:
        self.configs.append(merge_config)
        output = Path(merge_config.output)
        self.others_on_disk.append(len(list(output.parent.iterdir())) if output.parent.exists() else 0)
        if self.target == "lambda":
            value = merge_config.parameters["lambda"]
        else:
            value = next(m.weight for m in merge_config.models if m.model == self.vary)
        scaled_model(self.base_model, value).save_pretrained(output)
        self.tokenizer.save_pretrained(output)
        return output


@pytest.fixture
def texts(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "domain.txt").write_text(DOMAIN, encoding="utf-8")
    (tmp_path / "general.txt").write_text(GENERAL, encoding="utf-8")
    return tmp_path / "domain.txt", tmp_path / "general.txt"


def make_config(tmp_path, texts, **changes) -> SearchConfig:
    data = {
        "merge": {"method": "task_arithmetic", "base_model": "models/base",
                  "models": [{"model": "models/domain"}, {"model": "instruct", "weight": 1.0}],
                  "parameters": {"normalize": False}, "output": "ignored-by-search"},
        "grid": [0.0, 0.5, 2.0], "vary": "instruct", "domain_text": str(texts[0]),
        "output": str(tmp_path / "run"), "max_length": 16, "progress": False,
    }
    return SearchConfig.model_validate({**data, **changes})


def test_rows_for_every_value_and_best_minimises_the_score(tmp_path, texts, base_model, tokenizer):
    cfg = make_config(tmp_path, texts, general_text=str(texts[1]), general_weight=2.5)
    fake = FakeMerge(base_model, tokenizer)
    run_dir, result = run_search(cfg, merge_fn=fake)

    rows = result["rows"]
    assert [r["value"] for r in rows] == [0.0, 0.5, 2.0]
    for row in rows:
        expected = math.log(row["ppl_domain"]) + 2.5 * math.log(row["ppl_general"])
        assert row["score"] == pytest.approx(expected, rel=1e-9)
        assert row["seconds"] > 0 and row["tokens_domain"] > 0 and row["tokens_general"] > 0
    assert result["best"] == min(rows, key=lambda r: r["score"])
    # with this seed the general term changes the winner: domain perplexity alone would pick 0.0
    assert min(rows, key=lambda r: r["ppl_domain"])["value"] == 0.0 and result["best"]["value"] == 0.5
    assert result["objective"] == "score = log(ppl_domain) + 2.5 · log(ppl_general); lower is better"

    # the rows are the perplexities of the models the fake wrote, with the documented windowing
    domain_docs = ["The patient received aspirin.\nPressure was normal.",
                   "No further treatment was needed after surgery."]
    check = perplexity(scaled_model(base_model, 0.5), tokenizer, domain_docs, max_length=16)
    assert rows[1]["ppl_domain"] == pytest.approx(check["perplexity"], rel=1e-5)
    assert rows[0]["ppl_domain"] == pytest.approx(len(tokenizer), rel=1e-5)  # lm_head × 0 predicts uniformly

    # each merge got the derived config: value set, output inside the run, no nested progress bar
    assert [next(m.weight for m in c.models if m.model == "instruct") for c in fake.configs] == [0.0, 0.5, 2.0]
    assert all(c.models[0].weight == 1.0 and not c.progress for c in fake.configs)
    assert all(Path(c.output).parent == run_dir.path / "candidates" for c in fake.configs)

    saved = json.loads((run_dir.path / "search.json").read_text())
    assert saved["rows"] == rows and saved["best"] == result["best"] and saved["complete"]
    metrics = json.loads(run_dir.metrics.read_text())
    assert metrics["best"]["value"] == result["best"]["value"] and metrics["candidates"] == 3
    report = run_dir.report.read_text()
    assert "log(ppl_general)" in report and "data:image/png;base64," in report
    assert (run_dir.config).is_file() and (run_dir.log).is_file()


def test_only_the_best_model_is_kept(tmp_path, texts, base_model, tokenizer):
    from safetensors.torch import load_file

    cfg = make_config(tmp_path, texts, grid=[3.0, 0.5, 0.0, 1.0])
    fake = FakeMerge(base_model, tokenizer)
    run_dir, result = run_search(cfg, merge_fn=fake)
    assert max(fake.others_on_disk) <= 1  # best so far + the one being merged, never more
    assert not (run_dir.path / "candidates").exists()
    assert result["best_model"] == str(run_dir.path / "best")
    weights = load_file(run_dir.path / "best" / "model.safetensors")
    expected = base_model.lm_head.weight * result["best"]["value"]
    torch.testing.assert_close(weights["lm_head.weight"], expected)
    assert sorted(p.name for p in run_dir.path.iterdir()) == sorted(
        ["best", "config.yaml", "log.txt", "metrics.json", "report.html", "search.json"])


def test_keep_best_false_keeps_no_model(tmp_path, texts, base_model, tokenizer):
    cfg = make_config(tmp_path, texts, grid=[0.0, 1.0], keep_best=False)
    run_dir, result = run_search(cfg, merge_fn=FakeMerge(base_model, tokenizer))
    assert result["best"] is not None and result["best_model"] is None
    assert not (run_dir.path / "best").exists() and not (run_dir.path / "candidates").exists()


def test_general_term_only_with_general_text(tmp_path, texts, base_model, tokenizer):
    cfg = make_config(tmp_path, texts, grid=[0.5, 1.0], general_weight=3.0)
    _, result = run_search(cfg, merge_fn=FakeMerge(base_model, tokenizer))
    assert result["objective"] == objective_text(cfg) == "score = log(ppl_domain); lower is better"
    for row in result["rows"]:
        assert row["ppl_general"] is None and row["tokens_general"] is None
        assert row["score"] == pytest.approx(math.log(row["ppl_domain"]), rel=1e-9)


def test_lambda_target_sets_the_method_parameter(tmp_path, texts, base_model, tokenizer):
    cfg = make_config(tmp_path, texts, grid=[1.0, 0.25], target="lambda", vary=None)
    fake = FakeMerge(base_model, tokenizer, target="lambda")
    _, result = run_search(cfg, merge_fn=fake)
    assert [c.parameters for c in fake.configs] == [{"normalize": False, "lambda": 1.0},
                                                    {"normalize": False, "lambda": 0.25}]
    assert all(c.models == cfg.merge.models for c in fake.configs)
    assert len(result["rows"]) == 2
    assert cfg.merge.parameters == {"normalize": False}  # the user's config is not mutated


def test_diverged_candidate_is_never_chosen(tmp_path, texts, base_model, tokenizer):
    cfg = make_config(tmp_path, texts, grid=[-1.0, 2.0])
    run_dir, result = run_search(cfg, merge_fn=FakeMerge(base_model, tokenizer))
    assert math.isnan(result["rows"][0]["score"])
    assert result["best"]["value"] == 2.0 and result["unranked"] == [-1.0]
    assert json.loads(run_dir.metrics.read_text())["unranked"] == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"grid": []}, "grid: give at least one value"),
    ({"grid": [0.5, 0.5]}, "values repeat"),
    ({"grid": [0.5, math.inf]}, "finite"),
    ({"vary": "models/instruct"}, r"is not one of merge.models \['models/domain', 'instruct'\]"),
    ({"vary": None}, "target 'weight' needs the model"),
    ({"target": "lambda"}, "only for target 'weight'"),
    ({"stride": 17}, "stride: must not exceed max_length"),
])
def test_bad_configs_fail_before_anything_is_written(tmp_path, texts, changes, message):
    cfg = make_config(tmp_path, texts, **changes)
    with pytest.raises(ConfigError, match=message):
        run_search(cfg, merge_fn=lambda _: pytest.fail("must not merge"))
    assert not (tmp_path / "run").exists()


def test_missing_or_empty_text_files(tmp_path, texts):
    cfg = make_config(tmp_path, texts, domain_text=str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="missing.txt: file not found"):
        run_search(cfg, merge_fn=lambda _: pytest.fail("must not merge"))
    (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
    cfg = make_config(tmp_path, texts, general_text=str(tmp_path / "blank.txt"))
    with pytest.raises(DataError, match="blank.txt: file is empty"):
        run_search(cfg, merge_fn=lambda _: pytest.fail("must not merge"))
    assert not (tmp_path / "run").exists()


def test_merge_function_writing_elsewhere_is_refused_and_candidates_are_cleaned(tmp_path, texts, base_model,
                                                                                 tokenizer):
    fake = FakeMerge(base_model, tokenizer)

    def elsewhere(merge_config: MergeConfig) -> Path:
        fake(merge_config)
        return tmp_path / "somewhere-else"

    with pytest.raises(ModelError, match="somewhere-else"):
        run_search(make_config(tmp_path, texts), merge_fn=elsewhere)
    assert not (tmp_path / "run" / "candidates").exists()


def test_candidate_config_leaves_other_fields_alone(tmp_path, texts):
    cfg = make_config(tmp_path, texts)
    derived = candidate_config(cfg, 0.75, tmp_path / "out")
    assert derived.output == str(tmp_path / "out") and derived.progress is False
    assert [m.weight for m in derived.models] == [1.0, 0.75]
    assert derived.model_dump(exclude={"output", "progress", "models"}) == cfg.merge.model_dump(
        exclude={"output", "progress", "models"})
    assert cfg.merge.models[1].weight == 1.0


def test_chat_vector_search_with_the_real_engine(tmp_path, texts, model_family, tokenizer):
    from transformers import AutoModelForCausalLM

    family = model_family("llama")
    merge = {"method": "task_arithmetic", "base_model": str(family["base"]),
             "models": [{"model": str(family["domain"]), "weight": 1.0}, {"model": str(family["instruct"])}],
             "parameters": {"normalize": False, "lambda": 1.0}, "dtype": "float32"}
    cfg = SearchConfig(merge=merge, grid=[0.0, 1.0], vary=str(family["instruct"]), domain_text=str(texts[0]),
                       general_text=str(texts[1]), output=str(tmp_path / "run"), max_length=16, progress=False)
    run_dir, result = run_search(cfg)  # default merge function: adaptlab.merge.engine.merge_models

    domain_model = AutoModelForCausalLM.from_pretrained(family["domain"], dtype=torch.float32)
    expected = perplexity(domain_model, tokenizer, read_text_file(texts[0]), max_length=16)
    assert result["rows"][0]["ppl_domain"] == pytest.approx(expected["perplexity"], rel=1e-5)  # λ = 0: θ_D
    assert (run_dir.path / "best" / "merge_report.json").is_file()
    assert not (run_dir.path / "candidates").exists()
