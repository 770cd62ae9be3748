# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flmr-rag-installed
INTEGRATIONS := $(wildcard integrations/*/pyproject.toml)

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml $(INTEGRATIONS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch 2.13.0 first (a local CPU wheel where pip is set up with one), so that no other
	# package pulls a different, multi-GB torch build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[all,dev]" $(addprefix -e ,$(dir $(INTEGRATIONS)))
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/flmr-rag demo

bench: $(STAMP)
	$(BIN)/python benchmarks/index_bench.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
