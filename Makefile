# adaptlab developer entry points. Every target creates .venv/ on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint benchmark clean

setup: $(STAMP)

# torch is installed first from the pinned CPU build so that no CUDA wheel is pulled in;
# users with a GPU can `pip install torch` (CUDA) into .venv before or after.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/adaptlab distill demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

# Needs ../shared/data (evaluation data) and ~13 GB of free disk in /tmp; about 2 hours on 2 CPU cores (cpt_throughput runs its CPU mode without a GPU).
benchmark: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ner_biospecies.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/re_biospecies.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/teacher_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/merge_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/fractal_bench.py --seeds 0,1,2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cpt_throughput.py

clean:
	rm -rf $(VENV) build src/*.egg-info
