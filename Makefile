# bp-stream: every target creates and uses .venv itself (Python 3.11, nothing else pre-installed).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL := ml/artifacts/bp_logreg.joblib
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' infra/kafka-pom.xml)
KAFKA_LIB := .cache/kafka-$(KAFKA_VERSION)/lib
KAFKA ?= standin

.PHONY: help venv demo test lint unit integration infra-up infra-down train bench clean kafka

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

# Train if missing, or older than the code that defines its features, alerts or training (an artifact of an older
# format is refused by the consumer): one held-out seed keeps it quick; `make train` runs the whole evaluation.
$(MODEL): $(wildcard ml/*.py bp/features.py bp/alerts/*.py bp/cohort.py bp/physiology.py bp/profiles.py bp/truth.py) | $(STAMP)
	$(PY) -m ml.train_model --output $(MODEL) --eval-seeds 1

train: $(STAMP)  ## (re)train the risk model and regenerate the committed model card
	$(PY) -m ml.train_model --output $(MODEL) --model-card ml/MODEL_CARD.md

# Apache Kafka's broker jars from Maven Central, once (later runs reuse .cache/ and ~/.m2). Without Java or Maven,
# or when Maven fails, it says so and the tests use the stand-in for Kafka instead.
kafka:  ## fetch the Apache Kafka broker jars (Maven Central) into .cache/ for the tests and KAFKA=real
	@if [ -f $(KAFKA_LIB)/.complete ]; then \
		echo "kafka: Apache Kafka $(KAFKA_VERSION) jars ready in $(KAFKA_LIB)"; \
	elif ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then \
		echo "kafka: java or mvn not found: the tests use the noida-db stand-in for Kafka"; \
	else \
		start=$$(date +%s); rm -rf $(KAFKA_LIB); \
		mkdir -p .cache; \
		if mvn -B -Dstyle.color=never -f infra/kafka-pom.xml dependency:copy-dependencies -DincludeScope=runtime \
				-DoutputDirectory=$(CURDIR)/$(KAFKA_LIB) > .cache/kafka-fetch.log 2>&1; then \
			touch $(KAFKA_LIB)/.complete; \
			echo "kafka: fetched Apache Kafka $(KAFKA_VERSION) ($$(ls $(KAFKA_LIB) | wc -l) jars," \
				"$$(du -sh $(KAFKA_LIB) | cut -f1)) in $$(( $$(date +%s) - start )) s into $(KAFKA_LIB)"; \
		else \
			tail -n 5 .cache/kafka-fetch.log; \
			echo "kafka: Maven could not fetch Apache Kafka $(KAFKA_VERSION) (log: .cache/kafka-fetch.log):" \
				"the tests use the noida-db stand-in for Kafka"; \
		fi; \
	fi

demo: $(STAMP) $(MODEL) $(if $(filter real,$(KAFKA)),kafka)  ## end-to-end run on the stand-in (KAFKA=real: Apache Kafka): summary + report
	$(PY) -m infra.demo --kafka $(KAFKA)

lint: $(STAMP)  ## ruff + mypy (strict, every package)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy bp producer consumer ml infra bench runtime docker/kibana/*.py tests/unit/test_ports.py

test: lint kafka  ## lint, then every test (integration on Apache Kafka when Java + jars are there, else the stand-in)
	$(PY) -m pytest tests

unit: $(STAMP)  ## unit tests only
	$(PY) -m pytest tests/unit

integration: $(STAMP)  ## integration tests only
	$(PY) -m pytest -m integration tests/integration

infra-up: $(STAMP)  ## start the local stand-in (Kafka :9092, Elasticsearch :9200) unless BP_* endpoints are set
	$(PY) -m infra.standin up

infra-down: $(STAMP)  ## stop the local stand-in
	$(PY) -m infra.standin down

bench: $(STAMP) $(MODEL) $(if $(filter real,$(KAFKA)),kafka)  ## benchmarks -> bench/results/latest.json (KAFKA=real: on Apache Kafka)
	$(PY) -m bench.run $(if $(filter real,$(KAFKA)),--kafka real)

clean:  ## remove the venv, stand-in data, artifacts and archives
	rm -rf $(VENV) .infra .cache ml/artifacts bench/results reports .pytest_cache .mypy_cache .ruff_cache
	find data/normal -type f ! -name .gitkeep -delete
