# make setup | demo | test | bench | lint | format | clean
# lint: ruff (style), mypy (types of the library and the command line, settings in pyproject.toml).
# Every target creates .venv first (installing uv with pip if it is missing); later runs reuse it.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
RCNN := $(VENV)/bin/rcnn
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo

.PHONY: setup demo test bench lint format clean
.DEFAULT_GOAL := demo

# Bytecode compiled at install: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every command would
# otherwise compile torch's modules from source again, about 7 s a command.
$(VENV)/.synced: pyproject.toml uv.lock Makefile
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen --compile-bytecode
	@touch $@

setup: $(VENV)/.synced

# The demo's departures from the papers' settings (a CPU budget of minutes, small objects):
# far fewer iterations, at higher learning rates; SPP-net scales that bring the demo's small objects
# (median 48 px) near the paper's 224 x 224 (see README, "SPP-net"); Fast R-CNN trained at the paper's
# 600 but tested at 1000, where those objects span more conv5 cells (see README, "Fast R-CNN").
DEMO_PRETRAIN ?= --iterations 300 --batch-size 64 --step 250
DEMO_FINETUNE ?= --iterations 300
DEMO_SPP_SCALES ?= --scales 640,1280
DEMO_SPP_FINETUNE ?= --iterations 1000 --learning-rate 0.01 --step 800
DEMO_FAST_FINETUNE ?= --iterations 2000 --learning-rate 0.01 --step 1600 --test-scale 1000 --max-size 1666
DEMO_FAST_RANKS ?= --fc6-rank 128 --fc7-rank 32
DEMO_IMAGES = $$(head -n 4 $(DEMO_DATA)/ImageSets/Main/test.txt | sed 's|.*|$(DEMO_DATA)/JPEGImages/&.jpg|')

demo: setup
	$(RCNN) data demo --out $(DEMO_DATA) --seed 0
	$(RCNN) propose --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN)
	$(RCNN) propose --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) pretrain --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) --backbone tiny $(DEMO_PRETRAIN)
	$(RCNN) finetune --method rcnn --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_FINETUNE)
	$(RCNN) extract-features --method rcnn --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN)
	$(RCNN) extract-features --method rcnn --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) train-svm --method rcnn --run $(DEMO_RUN)
	$(RCNN) train-bbox --method rcnn --run $(DEMO_RUN)
	$(RCNN) evaluate --method rcnn --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) extract-features --method spp --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_SPP_SCALES)
	$(RCNN) finetune --method spp --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_SPP_FINETUNE)
	$(RCNN) extract-features --method spp --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_SPP_SCALES)
	$(RCNN) extract-features --method spp --data $(DEMO_DATA) --split test --run $(DEMO_RUN) $(DEMO_SPP_SCALES)
	$(RCNN) train-svm --method spp --run $(DEMO_RUN)
	$(RCNN) train-bbox --method spp --run $(DEMO_RUN)
	$(RCNN) evaluate --method spp --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) finetune --method fast --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_FAST_FINETUNE)
	$(RCNN) compress --run $(DEMO_RUN) $(DEMO_FAST_RANKS)
	$(RCNN) evaluate --method fast --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) evaluate --method fast --compressed --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) detect $(DEMO_IMAGES) --method fast --run $(DEMO_RUN) --grid $(DEMO_RUN)/fast/detect/grid.png
	$(RCNN) report --run $(DEMO_RUN)

test: setup lint
	$(VENV)/bin/pytest

bench: setup
	$(RCNN) data demo --out $(DEMO_DATA) --seed 0
	$(RCNN) bench proposals --data $(DEMO_DATA) --split test --images 40
	$(RCNN) bench features --data $(DEMO_DATA) --backbone zf5 --images 2
	$(RCNN) bench methods --data $(DEMO_DATA) --backbone tiny
	$(RCNN) bench methods --data $(DEMO_DATA) --backbone alexnet --images 2

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs $(DEMO_DATA) .pytest_cache .ruff_cache .mypy_cache
