# Every target does its own set-up on a fresh machine: a venv, torch==2.13.0 first (a local CPU wheel;
# any other torch would pull a multi-GB CUDA build), then the project with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo layers attack-demo lint bench docs dist wheel-smoke clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,build]"
	touch $(STAMP)

install: $(STAMP)

# the suite in parallel, one process per core (TEST_JOBS=1 for one process); each test file stays in one
# process, so its module fixtures (a trained bundle, a fitted detector) are built once
TEST_JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

# the main job: the OCT bundle trains the undefended baseline and SSAT (the paper's, and with a frozen
# teacher), fits the detector, evaluates every system and prints the comparison
demo: $(STAMP)
	$(BIN)/python -m monai_adv.bundle demo --bundle-dir bundles/oct_robust_classification

# the OCT layer segmentation bundle: trains the baseline and SSAT (UNet, 128 px), evaluates Dice under
# FGSM, PGD, SegPGD and CosPGD, compares
layers: $(STAMP)
	$(BIN)/python -m monai_adv.bundle demo --bundle-dir bundles/oct_layer_segmentation

# the attacks alone on a small undefended classifier (two minutes)
attack-demo: $(STAMP)
	$(BIN)/python -m monai_adv.apps.oct.attack_demo

lint: $(STAMP)
	$(BIN)/ruff check monai_adv tests benchmarks experiments docs/conf.py setup.py
	$(BIN)/ruff format --check monai_adv tests benchmarks experiments docs/conf.py setup.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/python benchmarks/attack_speed.py

# the API site (Sphinx: autodoc + napoleon, MyST for the guide pages and the tutorials), warnings as errors
docs: $(STAMP)
	rm -rf docs/_build/html
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "API site: docs/_build/html/index.html"

# the sdist and the wheel, in dist/
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --sdist --wheel --outdir dist .

# the wheel in a fresh venv (.venv-wheel), smoke-tested from a folder outside the source tree
wheel-smoke: $(STAMP)
	PY=$(PY) .ci/wheel_smoke

clean:
	rm -rf $(VENV) .venv-wheel .pytest_cache .hypothesis build dist *.egg-info docs/_build docs/_generated
