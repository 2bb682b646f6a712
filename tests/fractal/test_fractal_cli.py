"""``adaptlab fractal train | score | evaluate`` on a small bags file with the packaged MiniLM encoder."""

from __future__ import annotations

import json

from adaptlab.fractal.bags import Bag, PairBag, Response, write_bags

FACTS = ["The Nile flows north into the Mediterranean Sea.", "Water boils at 100 degrees Celsius at sea level.",
         "The Moon orbits the Earth about once a month.", "Mount Everest is the highest mountain above sea level."]
QUESTION = "Tell me a geography or science fact."
NOISE = ["I really like the colour of this page.", "Thanks for asking such a nice question!",
         "Let me know if there is anything else.", "Have a wonderful day ahead."]


def bags(n: int = 24) -> list[Bag]:
    out = []
    for i in range(n):
        positive = i % 2 == 0
        sentences = [NOISE[i % 4], NOISE[(i + 1) % 4]] + ([FACTS[i % 4]] if positive else [])
        labels = [0.0, 0.0] + ([1.0] if positive else [])
        out.append(Bag(id=f"b{i}", context=QUESTION, sentences=sentences, offsets=None,
                       label=float(positive), sentence_labels=labels, group=f"q{i // 2}"))
    return out


def test_train_score_and_evaluate(tmp_path, run_cli):
    data = tmp_path / "bags.jsonl"
    write_bags(bags(), data)
    cache = f"cache_dir={tmp_path / 'cache'}"
    code, out, err = run_cli("fractal", "train", "--data", data, "--output", tmp_path / "run", cache,
                             "train.epochs=20", "train.hidden=32")
    assert code == 0, err
    code, out, err = run_cli("fractal", "score", "--model", tmp_path / "run", "--input", data,
                             "--output", tmp_path / "scores.jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"b{i}" for i in range(24)]
    assert all(len(r["scores"]) == len(r["sentences"]) and all(0 <= s <= 1 for s in r["scores"]) for r in rows)
    assert rows[0]["scores"][2] > max(rows[0]["scores"][:2])  # the fact outscores the chatter
    mix = json.loads((tmp_path / "run" / "metrics.json").read_text())["prior_mix"]
    assert 0.0 <= mix["head_weight"] <= 1.0 and mix["holdout_bags"] == 24 and len(mix["grid_losses"]) == 11
    assert json.loads((tmp_path / "run" / "model" / "scorer.json").read_text())["prior_mix"] == mix

    prompts = tmp_path / "prompts.jsonl"  # the training question: the mixed-in prior compares with the prompt
    prompts.write_text(json.dumps({"prompt": QUESTION, "responses": [
        f"{NOISE[0]} {NOISE[1]}", f"{FACTS[0]} {FACTS[1]}"]}) + "\n" + json.dumps({"prompt": "x", "responses": ["A."]}))
    code, out, err = run_cli("fractal", "dpo-pairs", "--model", tmp_path / "run", "--input", prompts,
                             "--output", tmp_path / "dpo.jsonl", "--reduce", "mean")
    assert code == 0, err
    pair = json.loads((tmp_path / "dpo.jsonl").read_text().splitlines()[0])
    assert pair["chosen"].startswith(FACTS[0]) and pair["chosen_reward"] > pair["rejected_reward"]
    assert "1 pairs from 2 prompts (1 with < 2 responses" in out

    code, out, err = run_cli("fractal", "evaluate", "--data", data, "--output", tmp_path / "eval", cache, "folds=2",
                             "seeds=[0]", "train.epochs=10", "train.hidden=16", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) == {"cosine", "bagloss", "fractal", "fractal_pseudo", "supervised"}
    assert summary["supervised"]["auc_roc"]["mean"] > 0.9
    assert "background: hsl(" in (tmp_path / "eval" / "report.html").read_text()


def test_evaluate_needs_sentence_labels(tmp_path, run_cli):
    unlabelled = [Bag(id="x", context=None, sentences=["A.", "B."], offsets=None, label=1.0)]
    write_bags(unlabelled, tmp_path / "bags.jsonl")
    code, _, err = run_cli("fractal", "evaluate", "--data", tmp_path / "bags.jsonl")
    assert code == 2 and "sentence_labels" in err


def test_train_on_preference_pairs_only(tmp_path, run_cli):
    """Pairs alone (no labelled bags) train a scorer that prefers the facts; pairs_not_used counts when off."""
    pairs = [PairBag(id=f"p{i}", context="Tell me a fact.", a=Response([FACTS[i % 4], NOISE[i % 4]]),
                     b=Response([NOISE[(i + 1) % 4], NOISE[(i + 2) % 4]]), preference=float(i % 2 == 0), group=None)
             for i in range(16)]
    for pair in pairs[1::2]:  # odd pairs: the facts are on side b, preferred
        pair.a, pair.b = pair.b, pair.a
    data = tmp_path / "pairs.jsonl"
    write_bags(pairs, data)
    cache = f"cache_dir={tmp_path / 'cache'}"
    code, out, err = run_cli("fractal", "train", "--data", data, "--output", tmp_path / "run", cache,
                             "train.epochs=30", "train.hidden=16")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["pairs"] == 16 and metrics["bags"] == 0
    assert metrics["history"][-1]["preference"] < metrics["history"][0]["preference"]
    probe = tmp_path / "probe.jsonl"
    write_bags([Bag(id="t", context="Tell me a fact.", sentences=[NOISE[3], FACTS[2]], offsets=None, label=1.0)], probe)
    assert run_cli("fractal", "score", "--model", tmp_path / "run", "--input", probe,
                   "--output", tmp_path / "s.jsonl")[0] == 0
    scores = json.loads((tmp_path / "s.jsonl").read_text())["scores"]
    assert scores[1] > scores[0]
    code, _, err = run_cli("fractal", "train", "--data", data, "--output", tmp_path / "run2", cache, "pairs=false")
    assert code == 2 and "no bags and no pairs" in err


def test_evaluate_fits_fractal_on_the_training_fold_only(tmp_path, monkeypatch):
    """The prior mix is chosen inside fit(); fit only ever sees the training fold's bags and groups."""
    from adaptlab.recipes import fractal as recipe

    data = tmp_path / "bags.jsonl"
    write_bags(bags(), data)
    seen = []
    original = recipe.fit

    def spy(train, cfg, pairs=None, encoder_model=None, groups=None, pair_groups=None):
        seen.append((train.n_bags, list(groups)))
        return original(train, cfg, pairs, encoder_model, groups, pair_groups)

    monkeypatch.setattr(recipe, "fit", spy)
    cfg = recipe.FractalEvalConfig(data=str(data), cache_dir=str(tmp_path / "cache"), folds=3, seeds=[0],
                                   methods=["bagloss", "fractal"], output=str(tmp_path / "eval"),
                                   train={"epochs": 2, "hidden": 8, "prior_folds": 3, "prior_weight_scales": [1.0]})
    _, metrics = recipe.evaluate(cfg)
    assert len(seen) == 3  # once per fold for fractal; bagloss never mixes in the prior
    all_groups = {f"q{i}" for i in range(12)}
    held_out = [all_groups - set(groups) for _, groups in seen]
    assert set().union(*held_out) == all_groups and sum(len(h) for h in held_out) == 12  # each test group once
    assert all(n_bags == len(groups) == 2 * len(set(groups)) for n_bags, groups in seen)  # whole questions
    assert metrics["summary"]["fractal"]["auc_roc"]["n"] == 3


def test_constructions_need_multispanqa(tmp_path, run_cli):
    write_bags(bags(4), tmp_path / "bags.jsonl")
    code, _, err = run_cli("fractal", "evaluate", "--data", tmp_path / "bags.jsonl", "construction=half_cropped")
    assert code == 2 and "construction and data_seed build bags from MultiSpanQA's contexts" in err
    code, _, err = run_cli("fractal", "evaluate", "--data", tmp_path / "bags.jsonl", "construction=halves")
    assert code == 2 and "construction" in err and "half_cropped" in err
