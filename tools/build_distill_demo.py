"""Build the offline distillation demo's teacher cassette and reviewed Label Studio export.

The demo teacher's answers are written here from the hand-written demo training set
(resources/demo/train.jsonl): five species per class are "enumerated", and each species' sentences
come back as the teacher's JSON. To show every path of the pipeline, the answers carry the kinds
of mistakes real teachers make, each in a few places:

* answers the pipeline rejects: a truncated JSON answer, a duplicate and a nameless subject, an
  entity string that is not in the sentence, a label outside the schema, a relation to an entity
  that was not annotated, a near-duplicate sentence;
* annotation errors reviewers fix: a habitat span that swallows its preposition, a missed
  entity, a wrong entity type.

The reviewed export then plays the reviewers: their annotation of each task is the hand-checked
record, two sentences are rejected, one is skipped and a few are left unreviewed.

Run after changing the sentences prompt (the cassette is keyed by the exact request):

    .venv/bin/python tools/build_distill_demo.py
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

from adaptlab.data.formats.labelstudio import record_to_task
from adaptlab.data.records import Record, read_records
from adaptlab.recipes import distill, synth
from adaptlab.synth import generate as gen
from adaptlab.synth import review
from adaptlab.teacher.base import TeacherResponse, Usage
from adaptlab.teacher.prompts import load_prompt
from adaptlab.teacher.replay import write_cassette

PER_CLASS = 5
RESOURCES = Path(distill.__file__).resolve().parents[1] / "resources"


def species_of(record: Record, common_to_scientific: dict[str, str]) -> str | None:
    """The scientific name of the first species a record mentions."""
    span = next(s for s in record.spans if s.label == "SPECIES")
    text = record.span_text(span)
    match = re.search(r"\(([^)]+)\)", text)
    if match:
        return match.group(1)
    if text in common_to_scientific.values():
        return text
    return common_to_scientific.get(_fold(text))


def _fold(name: str) -> str:
    name = name.casefold()
    return name[:-1] if name.endswith("s") else name


def choose_species(records: list[Record]) -> dict[str, list[tuple[str, str, list[Record]]]]:
    """Per class: up to PER_CLASS (common name, scientific name, records), most sentences first."""
    common_to_scientific = {}
    for record in records:
        for span in record.spans:
            match = re.fullmatch(r"(.+?) \(([^)]+)\)", record.span_text(span))
            if span.label == "SPECIES" and match:
                common_to_scientific[_fold(match.group(1))] = match.group(2)
    grouped: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        scientific = species_of(record, common_to_scientific)
        if scientific:
            grouped[(record.meta["class"], scientific)].append(record)
    chosen = defaultdict(list)
    for (group, scientific), items in sorted(grouped.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0][1])):
        common = next((c for c, s in common_to_scientific.items() if s == scientific), scientific)
        if len(chosen[group]) < PER_CLASS:
            chosen[group].append((common.capitalize() if common.islower() else common, scientific, items))
    return chosen


def teacher_sentence(record: Record) -> dict:
    entities = [{"text": record.span_text(s), "type": s.label} for s in record.spans]
    relations = [{"head": record.span_text(record.spans[r.head]), "type": r.label,
                  "tail": record.span_text(record.spans[r.tail])} for r in record.relations]
    return {"text": record.text, "entities": entities, "relations": relations}


def add_mistakes(species_items: list[tuple[str, str, list[dict]]]) -> None:
    """Change the teacher's sentences in place, one kind of mistake per position (see module doc)."""
    sentences = [s for _, _, items in species_items for s in items]
    habitat = [s for s in sentences if any(e["type"] == "HABITAT" and f" in {e['text']}" in s["text"]
                                           for e in s["entities"])]
    for s in habitat[:3]:  # the preposition slips into the span: reviewers trim it
        e = next(e for e in s["entities"] if e["type"] == "HABITAT" and f" in {e['text']}" in s["text"])
        for r in s["relations"]:
            r["tail"] = "in " + e["text"] if r["tail"] == e["text"] else r["tail"]
        e["text"] = "in " + e["text"]
    many = [s for s in sentences if sum(e["type"] == "FEEDING" for e in s["entities"]) >= 2 and s not in habitat[:3]]
    for s in many[:3]:  # a missed entity: reviewers add it back
        dropped = [e for e in s["entities"] if e["type"] == "FEEDING"][-1]
        s["entities"].remove(dropped)
        s["relations"] = [r for r in s["relations"] if r["tail"] != dropped["text"]]
    breeding = [s for s in sentences if any(e["type"] == "BREEDING" for e in s["entities"]) and s not in many[:3]]
    for s in breeding[:2]:  # a wrong type: reviewers relabel it
        e = next(e for e in s["entities"] if e["type"] == "BREEDING")
        e["type"] = "HABITAT"
        for r in s["relations"]:
            if r["tail"] == e["text"]:
                r["type"] = "live_in"
    rejects = [s for s in sentences if len(s["entities"]) >= 3 and s not in habitat[:3] + many[:3] + breeding[:2]]
    rejects[0]["entities"][1]["text"] += " and rivers"  # not in the sentence
    rejects[1]["entities"][1]["type"] = "DIET"  # not in the schema
    rejects[2]["relations"].append({"head": rejects[2]["entities"][0]["text"], "type": "feed_on", "tail": "moss"})
    rejects[3]["entities"][0]["text"] = rejects[3]["entities"][0]["text"].lower()  # case differs: fuzzy alignment
    for r in rejects[3]["relations"]:
        r["head"] = r["head"].lower()
    items = next(items for _, _, items in species_items if rejects[4] in items)  # a near duplicate follows
    items.insert(items.index(rejects[4]) + 1, {**rejects[4], "text": rejects[4]["text"].replace(" ", "  ", 1)})


def build_cassette(cfg, chosen) -> list[tuple]:
    schema, sampling = cfg.schema_, gen.sampling_of(cfg.teacher.sampling)
    entries = []
    subjects_prompt = load_prompt("subjects", synth.PROMPTS_PACKAGE)
    sentence_prompt = load_prompt("sentences", synth.PROMPTS_PACKAGE)
    groups = cfg.subjects.groups
    requests = gen.subject_requests(subjects_prompt, schema, groups, cfg.subjects.per_group, sampling)
    species_items = []
    for group, request in zip(groups, requests, strict=True):
        listed = [{"name": common, "scientific_name": scientific} for common, scientific, _ in chosen[group]]
        if group == groups[0]:
            listed.append({"name": listed[0]["name"].upper(), "scientific_name": listed[0]["scientific_name"]})
            listed.append({"scientific_name": "Nomen nudum"})
        entries.append((request, _answer({"subjects": listed})))
        species_items += [(gen.Subject(common, scientific, group), scientific, [teacher_sentence(r) for r in items])
                          for common, scientific, items in chosen[group]]
    add_mistakes([(s.display, sci, items) for s, sci, items in species_items])
    subjects = [s for s, _, _ in species_items]
    requests = gen.sentence_requests(sentence_prompt, schema, subjects, cfg.sentences.per_request, 1, sampling)
    for k, (request, (_, _, items)) in enumerate(zip(requests, species_items, strict=True)):
        text = json.dumps({"sentences": items}, ensure_ascii=False)
        truncated = k == len(requests) - 1  # the last species' answer is cut off
        entries.append((request, _answer(text[: len(text) // 2] if truncated else text)))
    return entries


def _answer(payload) -> TeacherResponse:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return TeacherResponse(text, Usage(prompt_tokens=400, completion_tokens=len(text) // 4), "demo-teacher", "stop")


def reviewed_export(generated: list[Record], gold_by_text: dict[str, Record]) -> list[dict]:
    """Tasks as Label Studio exports them after review (see module doc for who does what)."""
    tasks = []
    for k, record in enumerate(generated):
        task = record_to_task(record, as_predictions=True, from_name=review.LABELS_NAME, to_name=review.TEXT_NAME,
                              model_version="demo-teacher")
        task["id"] = k + 1
        if k % 25 == 24:  # unreviewed
            tasks.append(task)
            continue
        if k == 40:
            task["annotations"] = [{"result": [], "was_cancelled": True, "completed_by": 2}]
            tasks.append(task)
            continue
        gold = gold_by_text[record.text]
        result = record_to_task(Record(gold.text, gold.spans, gold.relations), from_name=review.LABELS_NAME,
                                to_name=review.TEXT_NAME)["annotations"][0]["result"]
        verdict = review.REJECT if k in (12, 57) else review.ACCEPT
        result.append({"from_name": review.VERDICT_NAME, "to_name": review.TEXT_NAME, "type": "choices",
                       "value": {"choices": [verdict]}})
        task["annotations"] = [{"result": result, "was_cancelled": False, "completed_by": 1 + k % 2,
                                "updated_at": f"2026-11-2{1 + k % 2}T10:{k % 60:02d}:00Z"}]
        tasks.append(task)
    return tasks


def main() -> None:
    out = RESOURCES / "distill"
    cfg = distill.demo_synth_config(out / "cassette.jsonl", output=None)
    train = read_records(RESOURCES / "demo" / "train.jsonl")
    chosen = choose_species(train)
    write_cassette(build_cassette(cfg, chosen), out / "cassette.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        run, metrics = synth.generate(cfg.model_copy(update={"output": str(Path(tmp) / "gen"), "progress": False}))
        generated = read_records(run.path / "records.jsonl")
    tasks = reviewed_export(generated, {r.text: r for r in train})
    (out / "reviewed.json").write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print({stage: metrics[stage] for stage in synth.STAGES})
    print(f"{len(tasks)} reviewed tasks; species: " + ", ".join(f"{g}: {len(v)}" for g, v in chosen.items()))


if __name__ == "__main__":
    main()
