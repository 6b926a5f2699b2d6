# Every target does its own set-up on a fresh machine: a venv, torch==2.13.0 first (a local CPU wheel;
# any other torch would pull a multi-GB CUDA build), then the project with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m monai_adv.demo

lint: $(STAMP)
	$(BIN)/ruff check monai_adv tests benchmarks
	$(BIN)/ruff format --check monai_adv tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/attack_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
