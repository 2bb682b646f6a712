"""Build the small corpora of the offline domain-instruct demo (src/adaptlab/resources/lm_demo/).

The demo trains tiny language models from scratch on 2 CPU cores, so its text is simple and
regular: sentences assembled from hand-written templates and word lists, seeded, so the build is
reproducible. Four files:

* ``general.txt``: everyday English (weather, cooking, travel, school, work), paragraphs of 3-6
  sentences separated by blank lines; the tiny base model is pretrained on it, and part of it is
  held out as general text;
* ``domain.txt``: wildlife-conservation facts (where species live, what they eat, how they breed,
  how many are left), the domain the base model is continually pretrained on;
* ``instructions.jsonl``: short chat conversations (``{"messages": [...]}``) about general topics
  only; the tiny instruct model is the base model after SFT on them, so it has seen no domain text;
* ``domain_quiz.jsonl``: a multiple-choice task on domain facts (the task format of
  ``adaptlab.lm.mc_tasks``); the probe prompts are in ``probe.jsonl``.

Run after changing the templates:

    .venv/bin/python tools/build_lm_demo.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "adaptlab" / "resources" / "lm_demo"

PEOPLE = ["Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leo"]
PLACES = ["the market", "the station", "the library", "the park", "the office", "the school", "the harbour",
          "the bakery", "the museum", "the river"]
FOODS = ["soup", "bread", "rice", "pasta", "salad", "apples", "cheese", "eggs", "beans", "fish"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy", "foggy"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
GENERAL_TEMPLATES = [
    "On {day} the weather was {weather}, so {person} stayed near {place}.",
    "{person} cooked {food} for dinner and shared it with {person2}.",
    "{person} took the early train to {place} and arrived before nine.",
    "The teacher asked {person} to read a short story to the class.",
    "{person} bought {food} and {food2} at {place} on {day}.",
    "It was {weather} all morning, but the afternoon was calm.",
    "{person} and {person2} walked along {place} after work.",
    "{person} likes to drink tea while reading in {place}.",
    "The bus to {place} was late again on {day}.",
    "{person} wrote a letter to {person2} about the new job.",
    "After school, {person} practised the piano for an hour.",
    "{person} forgot the keys at {place} and had to go back.",
]

SPECIES = [
    ("snow leopard", "the high mountains of Central Asia", "wild sheep and goats", "two to three cubs", "4,000"),
    ("giant panda", "the bamboo forests of central China", "bamboo shoots and leaves", "one cub", "1,800"),
    ("Sumatran tiger", "the lowland rainforests of Sumatra", "deer and wild boar", "two or three cubs", "600"),
    ("hawksbill turtle", "the coral reefs of tropical seas", "sponges and sea anemones", "about 140 eggs", "20,000"),
    ("mountain gorilla", "the cloud forests of the Virunga volcanoes", "leaves, stems and fruit", "one infant",
     "1,000"),
    ("African wild dog", "the open savanna of southern Africa", "antelopes and gazelles", "ten pups", "6,600"),
    ("kakapo", "the forests of small islands in New Zealand", "seeds, fruit and pollen", "two to four eggs", "250"),
    ("Amur leopard", "the temperate forests of the Russian Far East", "roe deer and hares", "two cubs", "100"),
    ("blue whale", "the open oceans of the world", "tiny krill", "one calf", "10,000"),
    ("red panda", "the cool forests of the eastern Himalayas", "bamboo and berries", "one or two cubs", "10,000"),
    ("vaquita", "the northern Gulf of California", "small fish and squid", "one calf", "10"),
    ("orangutan", "the peat swamp forests of Borneo", "ripe fruit and young leaves", "one infant", "100,000"),
]
DOMAIN_TEMPLATES = [
    "The {name} lives in {habitat}.",
    "In the wild, the {name} feeds mainly on {diet}.",
    "A female {name} usually gives birth to {young}.",
    "Only about {count} {name}s are thought to remain in the wild.",
    "Conservation teams monitor the {name} with camera traps and field surveys.",
    "Habitat loss is the main threat to the {name}.",
    "Protected areas in {habitat} are vital for the {name}.",
    "Rangers patrol {habitat} to stop poachers who hunt the {name}.",
    "The diet of the {name} consists of {diet}.",
    "Breeding programmes help the {name} recover, because each female has {young}.",
]

INSTRUCTIONS = [
    ("What is {a} plus {b}?", "{a} plus {b} is {sum}."),
    ("Name a food that {person} could cook for dinner.", "{person} could cook {food} for dinner."),
    ("What is the weather like on a {weather} day?", "On a {weather} day the weather is {weather}."),
    ("Where can {person} buy {food}?", "{person} can buy {food} at the market."),
    ("Write one sentence about {place}.", "{person} spent a quiet afternoon at {place}."),
    ("Which day comes after {day}?", "The day after {day} is {next_day}."),
    ("Say hello to {person}.", "Hello, {person}! It is nice to meet you."),
    ("Give me a short tip for {day}.", "On {day}, plan your tasks early and take a short walk."),
]


def _fill(template: str, rng: random.Random, **fixed: str) -> str:
    people = rng.sample(PEOPLE, 2)
    foods = rng.sample(FOODS, 2)
    day = rng.randrange(len(DAYS))
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    values = {"person": people[0], "person2": people[1], "food": foods[0], "food2": foods[1],
              "place": rng.choice(PLACES), "weather": rng.choice(WEATHER), "day": DAYS[day],
              "next_day": DAYS[(day + 1) % 7], "a": str(a), "b": str(b), "sum": str(a + b), **fixed}
    return template.format(**values)


def general_text(rng: random.Random, paragraphs: int) -> str:
    return "\n\n".join(" ".join(_fill(rng.choice(GENERAL_TEMPLATES), rng) for _ in range(rng.randint(3, 6)))
                       for _ in range(paragraphs))


def domain_text(rng: random.Random, paragraphs: int) -> str:
    out = []
    for _ in range(paragraphs):
        name, habitat, diet, young, count = rng.choice(SPECIES)
        sentences = rng.sample(DOMAIN_TEMPLATES, rng.randint(3, 5))
        out.append(" ".join(t.format(name=name, habitat=habitat, diet=diet, young=young, count=count)
                            for t in sentences))
    return "\n\n".join(out)


def instructions(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        question, answer = rng.choice(INSTRUCTIONS)
        seed = rng.random()
        q, a = _fill(question, random.Random(seed)), _fill(answer, random.Random(seed))
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return rows


def domain_quiz() -> list[dict]:
    """Cloze questions in lm-eval style: which phrase completes a sentence about a species.

    The wrong choices are one other species' habitat (or diet) and two everyday places (or foods)
    from the general text: a model that has learned the domain text should at least prefer the
    domain phrases, and one that has bound species to facts picks the right one.
    """
    rows: list[dict] = [{"task": {"prompt": "{stem}", "choice": " {choice}."}}]
    for i, (name, habitat, diet, _, _) in enumerate(SPECIES):
        rng = random.Random(i)
        other = rng.choice([s for s in SPECIES if s[0] != name])
        places = [f"{a} and {b}" for a, b in zip(rng.sample(PLACES, 2), rng.sample(PLACES, 2))]
        foods = [f"{a} and {b}" for a, b in zip(rng.sample(FOODS, 2), rng.sample(FOODS, 2))]
        for field, stem, truth, wrong in (
            ("habitat", f"The {name} lives in", habitat, [other[1], *places]),
            ("diet", f"In the wild, the {name} feeds mainly on", diet, [other[2], *foods]),
        ):
            choices = [truth, *wrong]
            order = rng.sample(range(4), 4)
            rows.append({"id": f"{name}-{field}", "stem": stem, "choices": [choices[k] for k in order],
                         "answer": order.index(0)})
    return rows


PROBE = ["What is 2 plus 5?", "Name a food for lunch.", "Where can Anna buy bread?", "Say hello to Leo.",
         "Which day comes after Friday?", "Write one sentence about the park.", "Tell me about the snow leopard.",
         "What does the giant panda eat?"]


def main() -> None:
    rng = random.Random(0)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "general.txt").write_text(general_text(rng, 900) + "\n", encoding="utf-8")
    (OUT / "domain.txt").write_text(domain_text(rng, 700) + "\n", encoding="utf-8")
    (OUT / "instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in instructions(rng, 600)),
                                            encoding="utf-8")
    (OUT / "domain_quiz.jsonl").write_text("".join(json.dumps(r) + "\n" for r in domain_quiz()), encoding="utf-8")
    (OUT / "probe.jsonl").write_text("".join(json.dumps({"id": f"probe-{i}", "prompt": p}) + "\n"
                                             for i, p in enumerate(PROBE)), encoding="utf-8")
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
