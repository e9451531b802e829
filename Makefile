# Each target does its own set-up and can be re-run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: quickstart test venv install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# torch first and pinned: a CPU machine gets the CPU wheel, a GPU machine the standard CUDA build.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install $(TORCH_PIN)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	touch $@

# The quickstart's tiny model is built on first run and reused.
artifacts/tiny-qwen2/config.json: $(VENV)/.installed
	$(BIN)/shala-pl make-tiny-model artifacts/tiny-qwen2

quickstart: artifacts/tiny-qwen2/config.json
	$(BIN)/shala-pl fit --config quickstart

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/pip install -e ".[bench]"
	$(BIN)/python tools/benchmark_methods.py --quick

clean:
	rm -rf $(VENV) runs artifacts
