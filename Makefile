# LeadSync developer commands. Each target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# Checkov gets a virtualenv of its own: it pins packaging<24, pytest needs packaging>=24.
CHECKOV_VENV  := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

# The edit-test loop: pure rules, the registered handlers and the state stores (no devhost, no browser).
FAST_TESTS := tests/test_merge.py tests/test_fieldmap.py tests/test_validation.py tests/test_config.py \
              tests/test_odata.py tests/test_telemetry.py tests/test_handlers.py tests/test_state.py \
              tests/test_tablerows.py tests/test_tablebatch.py tests/test_workqueue.py tests/test_eligibility.py \
              tests/test_preflight.py tests/test_governor.py tests/test_pause.py tests/test_preview.py \
              tests/test_resync_targets.py tests/test_failkinds.py tests/test_charts.py \
              tests/test_leadstate.py tests/test_fieldtypes.py tests/test_fieldtypes_checks.py tests/test_outbox.py \
              tests/test_event_bodies.py tests/test_budgetrow.py tests/test_backlog.py \
              tests/test_event_window.py

.PHONY: setup lint test test-fast screenshot demo run bench chaos clean chromium

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
	$(VENV)/bin/lint-imports

chromium:
	sh scripts/ensure-chromium.sh

test: setup lint chromium
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest $(FAST_TESTS)

# Regenerates the health page screenshot in docs/ (tests write theirs to a temporary folder).
screenshot: setup chromium
	LEADSYNC_HEALTH_SCREENSHOT=$(CURDIR)/docs/health.png $(PY) -m pytest tests/test_health.py -k real_browser

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
