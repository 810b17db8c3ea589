# make setup | demo | test | bench | lint | format | clean
# Every target creates .venv first (installing uv with pip if it is missing); later runs reuse it.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
RCNN := $(VENV)/bin/rcnn
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo

.PHONY: setup demo test bench lint format clean
.DEFAULT_GOAL := demo

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen
	@touch $@

setup: $(VENV)/.synced

# The demo's one departure from the papers' settings: far fewer iterations (a CPU budget of minutes).
DEMO_PRETRAIN ?= --iterations 300 --batch-size 64 --step 250
DEMO_FINETUNE ?= --iterations 300
DEMO_SPP_SCALES ?= --scales 448,640,896,1280
DEMO_SPP_FINETUNE ?= --iterations 1500 --learning-rate 0.01 --step 1200
DEMO_IMAGE = $(DEMO_DATA)/JPEGImages/$$(head -n 1 $(DEMO_DATA)/ImageSets/Main/test.txt).jpg

demo: setup
	$(RCNN) data demo --out $(DEMO_DATA) --seed 0
	$(RCNN) data check --data $(DEMO_DATA) --split trainval
	$(RCNN) propose --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN)
	$(RCNN) propose --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) pretrain --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) --backbone tiny $(DEMO_PRETRAIN)
	$(RCNN) finetune --method rcnn --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_FINETUNE)
	$(RCNN) extract-features --method rcnn --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN)
	$(RCNN) extract-features --method rcnn --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) train-svm --method rcnn --run $(DEMO_RUN)
	$(RCNN) train-bbox --method rcnn --run $(DEMO_RUN)
	$(RCNN) evaluate --method rcnn --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) detect $(DEMO_IMAGE) --method rcnn --run $(DEMO_RUN)
	$(RCNN) extract-features --method spp --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_SPP_SCALES)
	$(RCNN) finetune --method spp --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_SPP_FINETUNE)
	$(RCNN) extract-features --method spp --data $(DEMO_DATA) --split trainval --run $(DEMO_RUN) $(DEMO_SPP_SCALES)
	$(RCNN) extract-features --method spp --data $(DEMO_DATA) --split test --run $(DEMO_RUN) $(DEMO_SPP_SCALES)
	$(RCNN) train-svm --method spp --run $(DEMO_RUN)
	$(RCNN) train-bbox --method spp --run $(DEMO_RUN)
	$(RCNN) evaluate --method spp --data $(DEMO_DATA) --split test --run $(DEMO_RUN)
	$(RCNN) detect $(DEMO_IMAGE) --method spp --run $(DEMO_RUN)
	$(RCNN) report --run $(DEMO_RUN)

test: setup lint
	$(VENV)/bin/pytest

bench: setup
	$(RCNN) data demo --out $(DEMO_DATA) --seed 0
	$(RCNN) bench proposals --data $(DEMO_DATA) --split test --images 40

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs $(DEMO_DATA) .pytest_cache .ruff_cache
