# Every target does its own set-up on a fresh machine: a venv, torch==2.13.0 first (a local CPU wheel;
# any other torch would pull a multi-GB CUDA build), then the project with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo attack-demo lint bench clean

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

# the main job: the OCT bundle trains the undefended baseline and SSAT (the paper's, and with a frozen
# teacher), fits the detector, evaluates every system and prints the comparison
demo: $(STAMP)
	$(BIN)/python -m monai_adv.bundle demo

# the attacks alone on a small undefended classifier (two minutes)
attack-demo: $(STAMP)
	$(BIN)/python -m monai_adv.attack_demo

lint: $(STAMP)
	$(BIN)/ruff check monai_adv tests benchmarks
	$(BIN)/ruff format --check monai_adv tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/python benchmarks/attack_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
