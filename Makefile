# make setup | demo | test | test-quick | bench | gpu-check-data | gpu-check | lint | format | clean
# lint: ruff (style), mypy (types of the library and the command line, settings in pyproject.toml).
# Every target creates .venv first (installing uv with pip if it is missing); later runs reuse it.

PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
RCNN := $(VENV)/bin/rcnn
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo

.PHONY: setup demo test test-quick bench gpu-check-data gpu-check lint format clean
.DEFAULT_GOAL := demo

# Python writes the bytecode of what it imports, even where PYTHONDONTWRITEBYTECODE is set (as on CI
# machines): otherwise every command compiles torch's modules from source again, about 10 s a command.
# Compiling only what is imported beats compiling every installed module at install (23 s).
export PYTHONDONTWRITEBYTECODE :=

$(VENV)/.synced: pyproject.toml uv.lock Makefile
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen
	@touch $@

setup: $(VENV)/.synced

# The demo's settings, with the reasons for each departure from the papers', are in configs/demo.toml;
# `rcnn run` runs its stages in order, skips those already up to date and ends with the report.
demo: setup
	$(RCNN) data demo --out $(DEMO_DATA) --seed 0
	$(RCNN) run configs/demo.toml --data $(DEMO_DATA) --run $(DEMO_RUN)

test: setup lint
	$(VENV)/bin/pytest

# A developer's loop: everything but the slow tests (torchrun, SIGKILL, whole chains: the `slow` marker).
test-quick: setup
	$(VENV)/bin/pytest -m "not slow"

# bench scaling times the demo run's networks under torchrun: the demo comes first (seconds when it is made).
bench: demo
	$(RCNN) bench proposals --data $(DEMO_DATA) --split test --images 40
	$(RCNN) bench features --data $(DEMO_DATA) --backbone zf5 --images 2
	$(RCNN) bench methods --data $(DEMO_DATA) --backbone tiny
	$(RCNN) bench scaling --data $(DEMO_DATA) --run $(DEMO_RUN)
	$(RCNN) bench methods --data $(DEMO_DATA) --backbone alexnet --images 2
	$(RCNN) bench startup

# The GPU check: its carried folder made here (selective search needs this machine's OpenCV contrib), then
# run on a lent GPU machine from the working tree, with no install (scripts/gpu-check; docs/many-processes.md).
gpu-check-data: setup
	$(RCNN) bench gpu-check --prepare

gpu-check:
	scripts/gpu-check --out runs/gpu-check

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs $(DEMO_DATA) .pytest_cache .ruff_cache .mypy_cache
