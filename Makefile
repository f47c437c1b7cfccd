# Two commands: `make demo` (set-up + the main job on generated sample videos) and
# `make test` (set-up + the test suite). Both create .venv and install when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo-out

.PHONY: setup test demo clean bench chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup chromium
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The report test drives a real headless Chromium: Debian's package when missing and running as root,
# otherwise one line saying what to install (CHROMIUM=/path/to/chromium points the test elsewhere).
chromium:
	@if [ -x "$${CHROMIUM:-/usr/bin/chromium}" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "make test: the report test needs Chromium at $${CHROMIUM:-/usr/bin/chromium}: run 'apt-get install chromium' as root, or set CHROMIUM=/path/to/chromium"; \
	fi

demo: setup
	$(VENV)/bin/lavie-curate samples $(DEMO)/raw --bad
	$(VENV)/bin/lavie-curate run $(DEMO)/raw -c configs/curate.yaml -o $(DEMO)/curated
	$(VENV)/bin/lavie-curate import webvid $(DEMO)/raw/webvid.csv --root $(DEMO)/raw --probe -o $(DEMO)/webvid
	$(VENV)/bin/lavie-curate import laion $(DEMO)/raw/laion.parquet -o $(DEMO)/laion
	rm -rf $(DEMO)/runs  # the demo trains afresh: lavie-train refuses an output_dir holding a run unless --resume
	$(VENV)/bin/lavie-train --stage base -c configs/train/tiny-base.yaml output_dir=$(DEMO)/runs/base
	$(VENV)/bin/lavie-train --stage interp -c configs/train/tiny-interp.yaml output_dir=$(DEMO)/runs/interp model.pretrained=$(DEMO)/runs/base/final model.tiny=false
	$(VENV)/bin/lavie-train --stage vsr -c configs/train/tiny-vsr.yaml output_dir=$(DEMO)/runs/vsr
	$(VENV)/bin/lavie-train --stage long -c configs/train/tiny-long.yaml output_dir=$(DEMO)/runs/long model.pretrained=$(DEMO)/runs/base/final model.tiny=false
	$(VENV)/bin/lavie-train --stage lora -c configs/train/tiny-lora.yaml output_dir=$(DEMO)/runs/lora model.pretrained=$(DEMO)/runs/base/final model.tiny=false
	$(VENV)/bin/lavie-sample "a slow zoom into a colourful Mandelbrot fractal" --base $(DEMO)/runs/base/final \
	    --interp $(DEMO)/runs/interp/final --vsr $(DEMO)/runs/vsr/final --steps 2 --seed 0 -o $(DEMO)/sample.mp4 --grid $(DEMO)/sample.png
	$(VENV)/bin/lavie-sample "a slow zoom into a colourful Mandelbrot fractal" --base $(DEMO)/runs/long/final --long 3 \
	    --interp $(DEMO)/runs/interp/final --num-frames 4 --steps 2 --seed 0 -o $(DEMO)/long.mp4 --grid $(DEMO)/long.png
	$(VENV)/bin/lavie-sample "a slow zoom into a colourful Mandelbrot fractal" --base $(DEMO)/runs/base/final \
	    --lora $(DEMO)/runs/lora/final --lora-scale 1.0 --steps 2 --seed 0 -o $(DEMO)/lora.mp4 --grid $(DEMO)/lora.png
	@echo "demo outputs in $(DEMO)/: curated/ (manifests, clips, report/report.html), runs/ (checkpoints), sample.mp4, long.mp4, lora.mp4"

bench: setup
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/scenes.py --accuracy --end-to-end
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
