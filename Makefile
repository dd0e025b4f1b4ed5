# mutator: two commands.  `make run` sets up and serves; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CERTS  := certs/dev
HOST   ?= 127.0.0.1
PORT   ?= 8443
POLICIES ?= examples/policies

.PHONY: run test e2e stress setup setup-test certs lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

certs: setup
	@test -f $(CERTS)/tls.crt || $(VENV)/bin/mutator certs --out $(CERTS)

run: setup certs
	@echo "mutator: serving https://$(HOST):$(PORT) with the policies in $(POLICIES) (Ctrl-C stops)"
	@echo "try:  curl --cacert $(CERTS)/ca.crt -H 'Content-Type: application/json' \\"
	@echo "        --data @examples/objects/pod-review.json https://$(HOST):$(PORT)/v1/mutate"
	$(VENV)/bin/mutator serve --policies $(POLICIES) --certs-dir $(CERTS) --host $(HOST) --port $(PORT)

test: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

# End-to-end tests against a real kube-apiserver on 127.0.0.1 (tests/e2e/cluster.py says where it comes from:
# MUTATOR_E2E_KUBECONFIG, KUBE_APISERVER_BIN + ETCD_BIN, or a one-time build from Debian sources into
# ${MUTATOR_E2E_CACHE:-~/.cache/mutator-e2e}, 5-12 minutes the first time).
e2e: setup-test
	$(VENV)/bin/pytest -q -m e2e tests/e2e

# Soak (10 minutes; MUTATOR_SOAK_SECONDS to change) and policy/certificate changes under load.
stress: setup-test
	$(VENV)/bin/pytest -q -s -m stress tests/stress

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup-test
	$(PY) bench/bench_mutation.py
	$(PY) bench/bench_validation.py
	$(PY) bench/bench_isolation.py
	$(PY) bench/bench_yaml.py

clean:
	rm -rf $(VENV) $(CERTS) .pytest_cache .ruff_cache
