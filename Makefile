# SMIR notebooks: the two commands are `make demo` and `make test`.
# Both create .venv on first use and install the pinned dependencies (constraints.txt).

SHELL := /bin/bash
# The first Python >= 3.11 on PATH (override with `make PYTHON=/path/to/python3.12 ...`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN ?= runs/$(shell date +%Y%m%d-%H%M%S)
PROFILE ?= fast
PYTEST_ARGS ?=
BOOK_DIR ?= build/book
# The development copy of the real data (../shared/data, when it exists) is the data folder of
# `make demo` and `make test`; an explicit SMIR_DATA_DIR wins. The library itself never looks there.
SMIR_DATA_DIR ?= $(if $(wildcard ../shared/data/cwfid),$(abspath ../shared/data))
export SMIR_DATA_DIR

.PHONY: demo book test unit bench gpu-check models mutants venv clean-venv help

help:
	@echo "make demo   run the notebook series (fast profile, synthetic data) into runs/<timestamp>/"
	@echo "make book   the executed notebooks of the newest demo run as a static site in $(BOOK_DIR)/html (runs the demo first when needed)"
	@echo "make test   run the whole test suite (unit, notebooks, nbval, ui, book, realdata, slow)"
	@echo "make unit   only the fast unit tests"
	@echo "make bench  run the benchmarks (benchmarks/)"
	@echo "make gpu-check  on an NVIDIA GPU machine: <= 8 min check, results in benchmarks/results/"
	@echo "make models train the teaching models (synthetic; CWFID too when its data is found)"
	@echo "make mutants  break the recipe on purpose (tests/mutants.py) and check the tests catch it"

$(STAMP): pyproject.toml constraints.txt
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: no Python 3.11 or newer found on PATH."; \
	  echo "  install it (Debian/Ubuntu: sudo apt-get install python3.11 python3.11-venv;"; \
	  echo "  macOS: brew install python@3.11; or https://www.python.org/downloads/)"; \
	  echo "  or point make at one: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)"; exit 1; fi
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed: install the venv module (Debian/Ubuntu: sudo apt-get install python3-venv)"; exit 1; }; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,export]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m smir_lib demo --profile $(PROFILE) --out $(RUN)

# The book (book/build.py, docs/book.md): preview with `python -m http.server -d $(BOOK_DIR)/html`.
book: $(STAMP)
	$(PY) book/build.py --out $(BOOK_DIR)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

# The teaching models (smir models, smir_lib/notebook/zoo.py): synthetic, plus CWFID when its data is found. Resumable.
MODEL_DATASETS ?= synthetic $(if $(wildcard $(SMIR_DATA_DIR)/cwfid/train_test_split.yaml data/cwfid/train_test_split.yaml),cwfid)
models: $(STAMP)
	$(PY) -m smir_lib models --dataset $(MODEL_DATASETS)

bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

mutants: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) tests/mutants.py $(MUTANTS)

gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
