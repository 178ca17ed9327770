# `make train` and `make test` create .venv on first use. Pass Hydra overrides with ARGS="...".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the PyTorch build to install; set e.g. TORCH="torch==2.14.1 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=

.PHONY: install train test bench lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

# training throughput against a hand-written loop and the FLOP bound, with each speed lever; ARGS="--keras ..."
bench: install
	$(PY) benchmarks/throughput.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
