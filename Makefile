# Two entry points on a fresh machine with Python 3.11 + pip:
#   make demo   -> installs into .venv, runs the end-to-end pipeline on data_samples/
#   make test   -> installs into .venv (with test extras), runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
RUN ?= runs/demo

.PHONY: install install-dev demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sleepfm demo --data data_samples --run $(RUN)

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
