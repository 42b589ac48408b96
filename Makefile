# LeadSync developer commands. Each target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

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

setup: $(STAMP) $(NODE_STAMP)

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

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
