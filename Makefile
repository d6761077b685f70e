# The README's whole set-up: `make fit` and `make test`. Both create .venv on first use and
# reinstall only when pyproject.toml changes (the stamp file records the last install).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.edgekd-installed

.PHONY: fit test lint format install

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[all,dev]'
	@touch $(STAMP)

fit: $(STAMP)
	$(VENV)/bin/edgekd fit --target pi5

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
