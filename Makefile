# Two commands do all the set-up on a fresh machine: `make serve` (the MONAI Label server on the bundled
# sample studies with the shipped model) and `make test` (lint and the full test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
STUDIES ?= apps/scoliosis/sample_studies

.PHONY: setup test lint serve benchmark clean

$(VENV)/.installed: pyproject.toml requirements/server.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[server,slicer,dev]"
	$(PY) -m pip install --quiet -r requirements/server.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/monailabel.txt
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(PY) -m ruff check lib tests apps benchmarks slicer_extension

test: lint
	$(PY) -m pytest -q

serve: setup
	$(VENV)/bin/monailabel start_server --app apps/scoliosis --studies $(STUDIES) --host $(HOST) --port $(PORT)

benchmark: setup
	$(VENV)/bin/spinecascade benchmark

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
