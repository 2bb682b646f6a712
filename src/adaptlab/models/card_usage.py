"""The "How to load it" section of a model card: a snippet that runs as it is against the model directory.

One snippet per kind of model, in the library a user of that kind already knows: ``pipeline()`` for token and
text classifiers (also a multi-task run's per-task exports), ``AutoModelForCausalLM`` with the tokenizer's chat
template for causal LMs, ``PeftModel.from_pretrained`` on the base model for an adapter, adaptlab's loader for a
few-shot classifier (a sentence-transformers body plus a head transformers has no class for), the CLI for a
FRACTAL scorer. The tests execute the Python snippets.
"""

from __future__ import annotations

import json
import shlex

from adaptlab.models.card_facts import ModelFacts

AUTO_CLASS = {"token-classification": "AutoModelForTokenClassification",
              "text-classification": "AutoModelForSequenceClassification",
              "text-generation": "AutoModelForCausalLM", "fill-mask": "AutoModelForMaskedLM",
              "feature-extraction": "AutoModel"}
PIPELINE_TASKS = ("token-classification", "text-classification", "fill-mask")
RELATION_EXAMPLE = "[E1]Aspirin[/E1] relieves [E2]headache[/E2]."


def load_snippet(facts: ModelFacts, location: str, base: str | None) -> tuple[str, str, str]:
    """``(prose, language, code)``: how to load the model at ``location`` (``base``: an adapter's base model)."""
    if facts.task == "fractal-scorer":
        return ("A FRACTAL scorer is read by adaptlab: score the sentences of a bags JSONL "
                "(`{id, context, response}` per line) with", "bash",
                f"adaptlab fractal score --model {shlex.quote(location)} --input bags.jsonl --output scores.jsonl")
    if facts.fewshot_head is not None:
        return ("adaptlab's loader reads the body and the head together "
                "(`sentence_transformers.SentenceTransformer` opens the body alone):", "python",
                _fewshot(location))
    if facts.adapter is not None:
        return (f"The adapter goes on its base model with PEFT (`adaptlab.models.adapters.load_pretrained("
                f"{literal(location)}, {AUTO_CLASS[facts.task]})` does the same and also handles added tokens):",
                "python", _adapter(facts, location, base))
    return _prose(facts), "python", _plain(facts, literal(location), imports=True)


def literal(text: str | None) -> str:
    """``text`` as a Python string literal in double quotes (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def _prose(facts: ModelFacts) -> str:
    if facts.task == "token-classification":
        return ("With transformers' pipeline (`simple` aggregation joins word pieces into entities; adaptlab's own "
                "`adaptlab ner predict` decodes IOB2-valid spans):")
    if facts.task == "text-classification":
        marked = (" The input is one sentence with the pair marked, as in training." if facts.relation_markers
                  else "")
        return f"With transformers' pipeline (or `AutoModelForSequenceClassification`).{marked}"
    if facts.task == "text-generation":
        how = "its tokenizer's chat template" if facts.chat_template else "a plain prompt (it has no chat template)"
        return f"With `AutoModelForCausalLM` and {how}:"
    return "With transformers:"


def _plain(facts: ModelFacts, model: str, imports: bool, tokenizer: str | None = None) -> str:
    """The code that uses a loaded model: ``model`` is a path literal or the name of a model variable."""
    given = f", tokenizer={tokenizer}" if tokenizer else ""
    head = "from transformers import pipeline\n\n" if imports else ""
    if facts.task == "token-classification":
        return (f'{head}tagger = pipeline("token-classification", model={model}{given}, aggregation_strategy="simple")'
                '\nprint(tagger("Replace this sentence with your own text."))\n')
    if facts.task == "text-classification":
        text = RELATION_EXAMPLE if facts.relation_markers else "Replace this sentence with your own text."
        return (f'{head}classifier = pipeline("text-classification", model={model}{given}, top_k=None)\n'
                f'print(classifier({literal(text)}))\n')
    if facts.task == "fill-mask":
        return (f'{head}fill = pipeline("fill-mask", model={model}{given})\n'
                'print(fill(f"The results were {fill.tokenizer.mask_token} in every trial."))\n')
    if facts.task == "text-generation":
        return _generate(facts, model, tokenizer, imports)
    load = ("from transformers import AutoModel, AutoTokenizer\n\n"
            f"tokenizer = AutoTokenizer.from_pretrained({model})\nmodel = AutoModel.from_pretrained({model})\n"
            if imports else "")
    return (f'{load}inputs = tokenizer(["Replace this sentence with your own text."], return_tensors="pt")\n'
            "print(model(**inputs).last_hidden_state.shape)\n")


def _generate(facts: ModelFacts, model: str, tokenizer: str | None, imports: bool) -> str:
    load = ""
    if imports:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"tokenizer = AutoTokenizer.from_pretrained({model})\n"
                f"model = AutoModelForCausalLM.from_pretrained({model})\n")
    if facts.chat_template:
        prompt = ('messages = [{"role": "user", "content": "Write one sentence about your field."}]\n'
                  "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\","
                  " return_dict=True)\n")
    else:
        prompt = 'inputs = tokenizer("The main result of this study is", return_tensors="pt")\n'
    return (f"{load}{prompt}"
            'ids, mask = inputs["input_ids"], inputs["attention_mask"]  # generate() refuses token_type_ids\n'
            "output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=64)\n"
            "print(tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True))\n")


def _adapter(facts: ModelFacts, location: str, base: str | None) -> str:
    auto = AUTO_CLASS[facts.task]
    lines = ["from peft import PeftModel",
             f"from transformers import {'AutoConfig, ' if facts.labels else ''}{auto}, AutoTokenizer"
             + (", pipeline" if facts.task in PIPELINE_TASKS else ""), "",
             f"adapter = {literal(location)}", "tokenizer = AutoTokenizer.from_pretrained(adapter)"]
    if facts.labels:
        lines += ["labels = AutoConfig.from_pretrained(adapter)  # the trained model's labels, saved with the adapter",
                  f"base = {auto}.from_pretrained({literal(base)}, id2label=labels.id2label, label2id=labels.label2id)"]
    else:
        lines.append(f"base = {auto}.from_pretrained({literal(base)})")
    if facts.relation_markers:
        lines.append("base.resize_token_embeddings(len(tokenizer))  # the entity markers added in training")
    merge = ".merge_and_unload()" if facts.mergeable_adapter else ""
    lines.append(f"model = PeftModel.from_pretrained(base, adapter){merge}.eval()")
    return "\n".join(lines) + "\n" + _plain(facts, "model", imports=False, tokenizer="tokenizer")


def _fewshot(location: str) -> str:
    return ("from adaptlab.ie.text_classifier import load_classifier\n\n"
            f"classifier = load_classifier({literal(location)})\n"
            'probabilities = classifier.predict_proba(["Replace this sentence with your own text."])[0]\n'
            "print(dict(zip(classifier.labels, probabilities.round(3).tolist())))\n")
