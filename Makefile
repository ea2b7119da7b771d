# Two entry points that work on a fresh machine with Python 3.11+ and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench notebook-png lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,notebook,dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m jax_conv_bpi

test: $(VENV)/.installed
	$(PY) -m pytest jax_conv_bpi tests README.md -q

bench: $(VENV)/.installed
	$(PY) -m jax_conv_bpi.bench

notebook-png: $(VENV)/.installed  # executes notebooks/explore_conv2d_backprop_input.py, saving its pictures to docs/img
	$(PY) notebooks/make_figures.py docs/img

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .
