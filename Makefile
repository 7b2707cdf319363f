# The quick start: `make demo` runs the whole pipeline against the built-in demo
# helpdesk; `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch is installed from the CPU build that pip finds first; it is a train/test extra only.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test lint install install-dev lock image-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev,train]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/helpdesk-triage demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check connector scripts tests
	$(BIN)/ruff format --check connector scripts tests
	$(BIN)/mypy

# The image's pinned, hashed runtime dependencies (pyproject.toml keeps ranges for
# library users). Re-run after changing [project].dependencies; tests check the pins.
lock: $(VENV)/.installed-dev
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
		--override docker/lock-overrides.txt --custom-compile-command 'make lock' \
		--output-file docker/requirements.lock

# Build the image on a Debian base made here and run the operator test (as root).
image-test: $(VENV)/.installed
	bash .ci/image-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
