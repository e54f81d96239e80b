PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The editable install leaves maild uncompiled; where PYTHONDONTWRITEBYTECODE is set, every
# CLI call would compile it again (~60 ms), hence compileall.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q maild
	touch $@

run: $(VENV)/.installed
	$(BIN)/maild run

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var
