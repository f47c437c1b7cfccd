# Two commands: `make demo` (set-up + the main job on generated sample videos) and
# `make test` (set-up + the test suite). Both create .venv and install when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo-out

.PHONY: setup test demo clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/lavie-curate samples $(DEMO)/raw --bad
	$(VENV)/bin/lavie-curate scenes $(DEMO)/raw -o $(DEMO)/scenes
	@echo "demo outputs in $(DEMO)/"

bench: setup
	$(PY) benchmarks/scenes.py

clean:
	rm -rf $(DEMO) .pytest_cache
