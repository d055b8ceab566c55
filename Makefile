# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
export HITL_HOME    ?= $(CURDIR)/.hitl
export DAGSTER_HOME ?= $(HITL_HOME)/dagster_home

.PHONY: install demo test faults bandit bench dagster mlflow clean

# The virtual environment is (re)built when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: seed a synthetic catalog and run 3 rounds of the loop through Dagster (embedded defaults, no server)
demo: $(STAMP)
	$(VENV)/bin/hitl demo

## test: the test suite: everything but the fault scenarios, then the fault scenarios (`make faults`); the bandit scan is a test
test: $(STAMP)
	$(PY) -m pytest -m "not faults"
	$(MAKE) --no-print-directory faults

## faults: the fault-injection scenarios only; writes $(HITL_HOME)/bench/faults.json (scenario, survived, lost, duplicated)
faults: $(STAMP)
	mkdir -p $(HITL_HOME)/bench
	rm -f $(HITL_HOME)/bench/faults.json
	HITL_FAULTS_JSON=$(HITL_HOME)/bench/faults.json $(PY) -m pytest tests/faults -m faults -q
	@cat $(HITL_HOME)/bench/faults.json

## bandit: static security scan of the product's code (medium and high severity; accepted findings carry `# nosec BXXX # why`)
bandit: $(STAMP)
	$(VENV)/bin/bandit -r hitl_assets ml resources -ll -q

## bench: every benchmark under benchmarks/ (figures as JSON under .hitl/bench/)
bench: $(STAMP)
	mkdir -p $(HITL_HOME)/bench
	set -e; for script in benchmarks/*.py; do \
	  case $$(basename $$script) in _*|summary.py) continue;; esac; \
	  echo "== $$script"; $(PY) $$script; done
	$(PY) benchmarks/summary.py

.PHONY: review
## review: the review app on http://127.0.0.1:8765 (first: `.venv/bin/hitl user add NAME --role admin`, password on stdin)
review: $(STAMP)
	$(VENV)/bin/hitl review --host 127.0.0.1 --port 8765

## dagster: the Dagster UI on what the demo wrote (http://127.0.0.1:3000)
dagster: $(STAMP)
	mkdir -p $(DAGSTER_HOME) && test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME)/
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## mlflow: the MLflow UI on the demo's tracking store (http://127.0.0.1:5000)
mlflow: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(HITL_HOME)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	test ! -d $(HITL_HOME)/stack || VENV=$(VENV) bash scripts/stack.sh down
	rm -rf $(HITL_HOME) .pytest_cache

.PHONY: stack stack-down

## stack: the production-like stack on loopback: PostgreSQL, S3-compatible server (moto), MLflow server
## (127.0.0.1:5000), Dagster webserver (127.0.0.1:3000) and daemon, instance on PostgreSQL (scripts/stack.sh)
stack: $(STAMP)
	VENV=$(VENV) bash scripts/stack.sh up

## stack-down: stop everything `make stack` started (the next `make stack` starts empty: moto is in memory)
stack-down:
	VENV=$(VENV) bash scripts/stack.sh down
