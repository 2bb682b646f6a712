"""A scripted stand-in teacher: made-up but well-formed answers to the packaged synth prompts.

Why: the generation pipeline, the HTTP backend, the cache and crash recovery must be exercised at
scale without a real LLM. :func:`scripted_answer` reads a chat-completions request body, recognises
the packaged ``subjects`` and ``sentences`` prompts, and answers with JSON that depends only on the
request (a hash picks names and sentence templates), so the same request always gets the same
answer, as a cassette would. It is used with :class:`~adaptlab.teacher.stub_server.StubServer` by
the tests and ``benchmarks/teacher_throughput.py``. Edited prompts are not recognised.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

SUBJECTS_REQUEST = re.compile(r"List (\d+) different real .+? entries from this group: (.+?)\.")
SENTENCES_REQUEST = re.compile(r'Write (\d+) different sentences about the \S+ "(.+?)"')

GENUS = ["Rana", "Bufo", "Hyla", "Salmo", "Aquila", "Papilio", "Lucanus", "Corvus", "Ursus", "Testudo"]
EPITHET = ["alpina", "borealis", "cristata", "dorsalis", "elegans", "fusca", "gracilis", "major", "minor", "nigra"]
HABITATS = ["mountain streams", "coastal marshes", "old-growth forests", "alpine meadows", "river deltas",
            "limestone caves", "mangrove swamps", "cloud forests"]
FOODS = ["insects", "small fish", "seeds", "snails", "fruit", "worms", "algae", "crustaceans"]
BREEDING = ["laying eggs under stones", "building nests in tree hollows", "spawning on gravel beds",
            "giving birth to live young"]
TEMPLATES = [
    ("$S live in $H.", [("H", "HABITAT", "live_in")]),
    ("$S feed on $F and $G.", [("F", "FEEDING", "feed_on"), ("G", "FEEDING", "feed_on")]),
    ("$S breed by $B.", [("B", "BREEDING", "breed_by")]),
    ("In $H, $S hunt for $F.", [("H", "HABITAT", "live_in"), ("F", "FEEDING", "feed_on")]),
    ("$S are found in $H, where they reproduce by $B.", [("H", "HABITAT", "live_in"), ("B", "BREEDING", "breed_by")]),
]


def _pick(options: list[str], key: str) -> str:
    return options[int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % len(options)]


def scripted_answer(body: dict[str, Any]) -> str:
    """The answer text for a request body; an unrecognised prompt gets ``{}``."""
    prompt = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
    if match := SUBJECTS_REQUEST.search(prompt):
        n, group = int(match.group(1)), match.group(2)
        subjects = [{"name": f"{group.rstrip('s')} {k + 1}",
                     "scientific_name": f"{_pick(GENUS, group + str(k))} {_pick(EPITHET, str(k) + group)} {k + 1}"}
                    for k in range(n)]
        return json.dumps({"subjects": subjects})
    if match := SENTENCES_REQUEST.search(prompt):
        n, subject = int(match.group(1)), match.group(2)
        return json.dumps({"sentences": [_sentence(subject, k) for k in range(n)]}, ensure_ascii=False)
    return "{}"


def _sentence(subject: str, k: int) -> dict[str, Any]:
    template, slots = TEMPLATES[k % len(TEMPLATES)]
    values = {"S": subject, "H": _pick(HABITATS, f"{subject}{k}h"), "F": _pick(FOODS, f"{subject}{k}f"),
              "B": _pick(BREEDING, f"{subject}{k}b")}
    values["G"] = next(f for f in FOODS[FOODS.index(values["F"]) + 1:] + FOODS if f != values["F"])
    text = template
    for key, value in values.items():
        text = text.replace(f"${key}", value)
    entities = [{"text": subject, "type": "SPECIES"}] + [{"text": values[key], "type": label}
                                                        for key, label, _ in slots]
    relations = [{"head": subject, "type": relation, "tail": values[key]} for key, _, relation in slots]
    return {"text": text, "entities": entities, "relations": relations}
