"""Render the benchmark JSON in benchmarks/results/ as Markdown tables (for the READMEs).

    python benchmarks/tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
TYPES = ["SPECIES", "HABITAT", "FEEDING", "BREEDING"]


def targets_table(targets: list[dict]) -> Table:
    """The benchmark's targets (``target``, ``value``, ``pass``) as a rich table with PASS / FAIL."""
    table = Table(title="targets")
    for column in ("target", "value", "result"):
        table.add_column(column)
    for t in targets:
        table.add_row(t["target"], str(t["value"]), "[green]PASS" if t["pass"] else "[red]FAIL")
    return table


def cell(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def ner_tables(results: dict) -> str:
    lines = [f"NER, {results['folds']}-fold cross-validation, student {results['student']} (F1, mean ± std over folds)",
             "", "| data | recipe | level | " + " | ".join(TYPES) + " | macro | folds | s/fold (mean, max) |",
             "|---|---|---|" + "---:|" * (len(TYPES) + 3)]
    for variant in ("normalised", "raw"):
        for recipe in ("adaptlab", "plain"):
            res = results["variants"].get(variant, {}).get(recipe)
            if not res:
                continue
            s = res["summary"]
            for level in ("strict", "overlap", "token"):
                cells = " | ".join(cell(s[level][t]) for t in TYPES + ["macro"])
                secs = f"{s['seconds']['mean']:.0f}, {s['seconds']['max']:.0f}"
                lines.append(f"| {variant} | {recipe} | {level} | {cells} | {len(res['folds'])} | {secs} |")
    lines += ["", "Paper (type of F1 not stated): "
              + ", ".join(f"{m} {v['macro']:.4f}" for m, v in results["paper"].items()), "",
              "Pooled out-of-fold strict / token macro F1 by the record's original preposition convention, "
              "and on the sequences repair drops (scored by each fold's model):", "",
              "| data | recipe | inside | outside | mixed | unrepairable sequences |", "|---|---|---|---|---|---|"]
    for variant, by_recipe in results["variants"].items():
        for recipe, res in by_recipe.items():
            conv = res["by_convention"]
            parts = [f"{conv[k]['strict_macro']:.3f} / {conv[k]['token_macro']:.3f} (n={conv[k]['records']})"
                     if k in conv else "–" for k in ("inside", "outside", "mixed")]
            hard = res.get("unrepairable_sequences")
            parts.append(f"{hard['strict_macro_mean']:.3f} / {hard['token_macro_mean']:.3f} (n={hard['records']})"
                         if hard else "–")
            lines.append(f"| {variant} | {recipe} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def re_tables(results: dict) -> str:
    part, e2e = results["re_file"], results["end_to_end"]
    lines = ["Relation classification on the released RE file (weighted F1, held-out species)", "",
             "| method | weighted F1 |", "|---|---:|",
             f"| paper (BERT-family) | {results['paper_re_weighted_f1']:.3f} |"]
    for name in ("string_rule", "student", "student_connective_masked"):
        lines.append(f"| {name} | {part[name]['weighted']['f1']:.3f} |")
    lines += ["", "Text to triples on the NER data (triple F1, held-out sequences)", "",
              "| pipeline | micro F1 | live_in | feed_on | breed_by |", "|---|---:|---:|---:|---:|"]
    for name in ("ner_type_rule", "ner_re_student", "gold_spans_re_student"):
        row = e2e[name]
        per = " | ".join(f"{row['per_relation'].get(r, {}).get('f1', 0):.3f}"
                         for r in ("live_in", "feed_on", "breed_by"))
        lines.append(f"| {name} | {row['micro']['f1']:.3f} | {per} |")
    return "\n".join(lines)


def main() -> None:
    for name, render in (("ner_biospecies.json", ner_tables), ("re_biospecies.json", re_tables)):
        path = RESULTS / name
        if path.exists():
            print(render(json.loads(path.read_text())) + "\n")


if __name__ == "__main__":
    main()
