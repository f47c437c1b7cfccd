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
	$(VENV)/bin/lavie-curate import webvid $(DEMO)/raw/webvid.csv --root $(DEMO)/raw --probe -o $(DEMO)/webvid
	$(VENV)/bin/lavie-curate import laion $(DEMO)/raw/laion.parquet -o $(DEMO)/laion
	rm -rf $(DEMO)/runs  # the demo trains afresh: lavie-train refuses an output_dir holding a run unless --resume
	$(VENV)/bin/lavie-train --stage base -c configs/train/tiny-base.yaml output_dir=$(DEMO)/runs/base
	$(VENV)/bin/lavie-train --stage interp -c configs/train/tiny-interp.yaml output_dir=$(DEMO)/runs/interp model.pretrained=$(DEMO)/runs/base/final model.tiny=false
	$(VENV)/bin/lavie-train --stage vsr -c configs/train/tiny-vsr.yaml output_dir=$(DEMO)/runs/vsr
	$(VENV)/bin/lavie-sample "a slow zoom into a colourful Mandelbrot fractal" --base $(DEMO)/runs/base/final \
	    --interp $(DEMO)/runs/interp/final --vsr $(DEMO)/runs/vsr/final --steps 2 --seed 0 -o $(DEMO)/sample.mp4 --grid $(DEMO)/sample.png
	@echo "demo outputs in $(DEMO)/: curated/ (manifests, clips, report/report.html), runs/ (checkpoints), sample.mp4"

bench: setup
	$(PY) benchmarks/scenes.py
	$(PY) benchmarks/large_manifest.py
	$(PY) benchmarks/unet.py
	$(PY) benchmarks/curate.py
	$(PY) benchmarks/dataloader.py
	$(PY) benchmarks/train_step.py

# One run that qualifies the toolkit on a CUDA machine (benchmarks/gpu.py, under 8 minutes on an
# H200): table printed and in gpu-check-out/. torchcodec (optional) adds the decoder and NVDEC rows.
.PHONY: gpu-check
gpu-check: setup
	$(PY) -c "import torchcodec" 2>/dev/null || $(PY) -m pip install --quiet --retries 0 --timeout 15 torchcodec \
	    || echo "torchcodec not installed: its rows will say so"
	$(PY) benchmarks/gpu.py --out gpu-check-out

clean:
	rm -rf $(DEMO) .pytest_cache
