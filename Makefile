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
	$(VENV)/bin/lavie-curate run $(DEMO)/raw -c configs/curate.yaml -o $(DEMO)/curated
	$(PY) -c "from lavie.model.tiny import build_tiny_components as b; [b('$(DEMO)/tiny/' + s, stage=s) for s in ('base', 'interp', 'vsr')]"
	$(VENV)/bin/lavie-sample "a red bus on a bridge" --base $(DEMO)/tiny/base --interp $(DEMO)/tiny/interp --vsr $(DEMO)/tiny/vsr --steps 2 --seed 0 -o $(DEMO)/sample.mp4
	@echo "demo outputs in $(DEMO)/: curated/ (manifests, clips, report/report.html), sample.mp4"

bench: setup
	$(PY) benchmarks/scenes.py
	$(PY) benchmarks/large_manifest.py
	$(PY) benchmarks/unet.py

clean:
	rm -rf $(DEMO) .pytest_cache
