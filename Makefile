# LeadSync developer commands. Each target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# Checkov gets a virtualenv of its own: it pins packaging<24, pytest needs packaging>=24.
CHECKOV_VENV  := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: setup lint test demo run bench chaos clean chromium

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHECKOV_STAMP): infra/requirements-checkov.txt $(STAMP)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r infra/requirements-checkov.txt
	touch $@

setup: $(STAMP) $(NODE_STAMP) $(CHECKOV_STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared functions function_app.py cli

chromium:
	sh scripts/ensure-chromium.sh

test: setup lint chromium
	$(PY) -m pytest

demo: setup
	$(PY) -m devhost demo

run: setup
	$(PY) -m devhost run

bench: setup
	$(PY) -m bench

chaos: setup
	$(PY) -m chaos

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
