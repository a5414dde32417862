# bp-stream: every target creates and uses .venv itself (Python 3.11, nothing else pre-installed).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL := ml/artifacts/bp_logreg.joblib

.PHONY: help venv demo test lint unit integration infra-up infra-down train bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || \
		{ echo "error: Python 3.11 needed (found: '$(PYTHON)'); set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install pinned dependencies

$(MODEL): | $(STAMP)  # train if missing (demo, bench): one held-out seed keeps it quick; `make train` runs all
	$(PY) -m ml.train_model --output $(MODEL) --eval-seeds 1

train: $(STAMP)  ## (re)train the risk model and regenerate the committed model card
	$(PY) -m ml.train_model --output $(MODEL) --model-card ml/MODEL_CARD.md

demo: $(STAMP) $(MODEL)  ## bounded end-to-end run against the stand-in (or BP_* endpoints): summary + report
	$(PY) -m infra.demo

lint: $(STAMP)  ## ruff + mypy (strict on bp/ and runtime/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy bp producer consumer ml infra bench runtime

test: lint  ## lint, then every test (unit + integration against the stand-in)
	$(PY) -m pytest tests

unit: $(STAMP)  ## unit tests only
	$(PY) -m pytest tests/unit

integration: $(STAMP)  ## integration tests only
	$(PY) -m pytest -m integration tests/integration

infra-up: $(STAMP)  ## start the local stand-in (Kafka :9092, Elasticsearch :9200) unless BP_* endpoints are set
	$(PY) -m infra.standin up

infra-down: $(STAMP)  ## stop the local stand-in
	$(PY) -m infra.standin down

bench: $(STAMP) $(MODEL)  ## benchmarks -> bench/results/latest.json
	$(PY) -m bench.run

clean:  ## remove the venv, stand-in data, artifacts and archives
	rm -rf $(VENV) .infra ml/artifacts bench/results reports .pytest_cache .mypy_cache .ruff_cache
	find data/normal -type f ! -name .gitkeep -delete
