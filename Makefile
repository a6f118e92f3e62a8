# Two commands do all set-up on a fresh clone: `make up` and `make test`.
# Both create .venv and install the project into it (the package names are generic, so the
# project always lives in its own virtual environment).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/urbanpulse up

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_senml.py
	$(BIN)/python bench/bench_write.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist
