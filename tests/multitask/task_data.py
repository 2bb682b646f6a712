"""Tiny data for three tasks (NER, RE, classification) that a tiny random BERT learns in seconds, and configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from adaptlab.data.records import Record, Relation, Span, write_records
from zorb_records import zorb_records

ANIMALS = ["Zorbfish", "Zorbtoad", "Zorbowl"]
PLACES = ["lake", "lakeside", "pond"]
FOODS = ["worms", "algae", "seeds"]
FAST = ["training.progress=false", "training.per_device_eval_batch_size=64", "training.warmup_steps=0"]


def ner_records(n: int, seed: int) -> list[Record]:
    """Sentences where 'Zorb' words are ANIMAL and water words PLACE."""
    return zorb_records(n, seed, ANIMALS, PLACES, words=(4, 8), entity_share=0.25)


def re_records(n: int, seed: int) -> list[Record]:
    """'<animal> lives in the <place>' (live_in) or '<animal> eats <food>' (feed_on), one relation each."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        animal = rng.choice(ANIMALS)
        if rng.random() < 0.5:
            tail, label, relation = rng.choice(PLACES), "HABITAT", "live_in"
            text = f"{animal} lives in the {tail}"
        else:
            tail, label, relation = rng.choice(FOODS), "FEEDING", "feed_on"
            text = f"{animal} eats {tail}"
        start = text.rindex(tail)
        records.append(Record(text, [Span(0, len(animal), "SPECIES"), Span(start, start + len(tail), label)],
                              [Relation(0, 1, relation)]))
    return records


def topic_rows(n: int, seed: int) -> list[dict]:
    """Texts about water or about food, labelled by topic."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        water = rng.random() < 0.5
        word = rng.choice(PLACES if water else FOODS)
        rows.append({"text": f"{rng.choice(['a', 'the', 'some'])} {word} {rng.choice(['here', 'there', 'again'])}",
                     "label": "water" if water else "food"})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_task_files(folder: Path) -> dict[str, Path]:
    """Train and dev files of the three tasks in ``folder``."""
    files = {name: folder / f"{name}.jsonl" for name in ("ner", "ner_dev", "re", "re_dev", "topic", "topic_dev")}
    write_records(ner_records(48, 0), files["ner"])
    write_records(ner_records(16, 1), files["ner_dev"])
    write_records(re_records(24, 2), files["re"])
    write_records(re_records(12, 3), files["re_dev"])
    write_jsonl(topic_rows(32, 4), files["topic"])
    write_jsonl(topic_rows(12, 5), files["topic_dev"])
    return files


def write_config(folder: Path, model: Path, tasks: tuple[str, ...] = ("species", "relations", "topic"),
                 **top: object) -> Path:
    """A config over some of the three tasks (species: ner, relations: re, topic: cls) of ``write_task_files``."""
    files = write_task_files(folder)
    every = {
        "species": {"type": "ner", "train": str(files["ner"]), "dev": str(files["ner_dev"])},
        "relations": {"type": "re", "train": str(files["re"]), "dev": str(files["re_dev"])},
        "topic": {"type": "cls", "train": str(files["topic"]), "dev": str(files["topic_dev"]),
                  "text_column": "text", "label_column": "label"},
    }
    config = {"name": "mt-test", "model": str(model), "tasks": {name: every[name] for name in tasks},
              "training": {"learning_rate": 5e-3, "per_device_train_batch_size": 8}, **top}
    path = folder / "multitask.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
