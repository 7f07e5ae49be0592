# Two entry points on a fresh machine with Python 3.11 + pip:
#   make demo   -> installs into .venv, runs the end-to-end pipeline on data_samples/ and a
#                  generated synthetic cohort, then serves the dashboard on the run
#   make test   -> installs into .venv (with test extras) and Chromium for the browser tests
#                  where it can, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
RUN ?= runs/demo

.PHONY: install install-dev browser demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Headless Chromium + chromedriver for the dashboard's browser tests (Debian packages); where
# they cannot be installed the browser tests skip and say why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver) \
	    || echo "could not install Chromium: the browser tests will be skipped"; }

demo: install
	$(BIN)/sleepfm demo --data data_samples --run $(RUN)

test: install browser
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
