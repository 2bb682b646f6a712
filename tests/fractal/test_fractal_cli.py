"""``adaptlab fractal train | score | evaluate`` on a small bags file with the packaged MiniLM encoder."""

from __future__ import annotations

import json

from adaptlab.fractal.bags import Bag, write_bags

FACTS = ["The Nile flows north into the Mediterranean Sea.", "Water boils at 100 degrees Celsius at sea level.",
         "The Moon orbits the Earth about once a month.", "Mount Everest is the highest mountain above sea level."]
NOISE = ["I really like the colour of this page.", "Thanks for asking such a nice question!",
         "Let me know if there is anything else.", "Have a wonderful day ahead."]


def bags(n: int = 24) -> list[Bag]:
    out = []
    for i in range(n):
        positive = i % 2 == 0
        sentences = [NOISE[i % 4], NOISE[(i + 1) % 4]] + ([FACTS[i % 4]] if positive else [])
        labels = [0.0, 0.0] + ([1.0] if positive else [])
        out.append(Bag(id=f"b{i}", context="Tell me a geography or science fact.", sentences=sentences, offsets=None,
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

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Tell me a fact.", "responses": [
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
