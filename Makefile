# Two commands set everything up on a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
# Rasa 3.6 needs Python 3.10: pyenv's if present, else one on the PATH.
PY310 ?= $(shell ls -d $$(pyenv root 2>/dev/null)/versions/3.10.*/bin/python3.10 2>/dev/null | tail -1 || true)
PY310 := $(if $(PY310),$(PY310),$(shell command -v python3.10 2>/dev/null))
VENV := .venv
RASA_VENV := .venv-rasa
DEBIAN_PACKAGES := $(shell grep -hv '^\#' requirements-debian.txt | xargs)
DEBIAN_TEST_PACKAGES := $(shell grep -hv '^\#' requirements-debian.txt requirements-debian-test.txt requirements-debian-cluster.txt | xargs)
DEBIAN_CLUSTER_PACKAGES := $(shell grep -hv '^\#' requirements-debian.txt requirements-debian-cluster.txt | xargs)
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: run cluster cluster-system-deps test train lint typecheck pytest bench rasa-env gateway-env system-deps test-system-deps debian-packages clean

run: gateway-env rasa-env system-deps ## install, train when the data changed, start the service
	$(VENV)/bin/triage train
	$(VENV)/bin/triage models download it en --if-possible
	$(VENV)/bin/triage serve

# A cluster on this machine: two nodes on the local PostgreSQL and Redis, HAProxy and Kamailio
# in front (docs/cluster.md). `make run` stays the single node on SQLite.
cluster: gateway-env rasa-env cluster-system-deps ## two nodes, HAProxy and Kamailio on this machine
	$(VENV)/bin/triage cluster up

test: gateway-env rasa-env test-system-deps lint typecheck pytest ## install what the tests need, run them

gateway-env: $(VENV)/.installed
rasa-env: $(RASA_VENV)/.installed

# rasa_side/ is the code Rasa's process runs (triage_rasa) and the masking both sides share
# (triage_pii): the gateway installs it for triage_pii, without dependencies (it has none).
$(VENV)/.installed: pyproject.toml rasa_side/pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) --upgrade pip
	$(VENV)/bin/pip install $(PIP_QUIET) --no-deps -e ./rasa_side
	$(VENV)/bin/pip install $(PIP_QUIET) -e '.[test]'
	touch $@

$(RASA_VENV)/.installed: requirements-rasa.txt rasa_side/pyproject.toml
	@test -n "$(PY310)" || { echo "Python 3.10 is needed for Rasa 3.6: install it (pyenv install 3.10, or uv python install 3.10) or set PY310=/path/to/python3.10"; exit 1; }
	test -x $(RASA_VENV)/bin/python || $(PY310) -m venv $(RASA_VENV)
	$(RASA_VENV)/bin/pip install $(PIP_QUIET) --upgrade pip wheel 'setuptools<70'
	$(RASA_VENV)/bin/pip install $(PIP_QUIET) -r requirements-rasa.txt
	$(RASA_VENV)/bin/pip install $(PIP_QUIET) -e ./rasa_side
	touch $@

system-deps: ## Debian packages the service needs (installed when root, else the command is printed)
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(DEBIAN_PACKAGES)"

cluster-system-deps: ## ... and those of a cluster on one machine (haproxy, kamailio)
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(DEBIAN_CLUSTER_PACKAGES)"

test-system-deps: ## ... and those the tests need too
	@$(MAKE) --no-print-directory debian-packages PACKAGES="$(DEBIAN_TEST_PACKAGES)"

debian-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "missing Debian packages; run: sudo apt-get install -y $$missing"; exit 1; \
	fi

lint: gateway-env
	$(VENV)/bin/ruff check bot voice tests bench rasa_side
	$(VENV)/bin/lint-imports

typecheck: gateway-env
	$(VENV)/bin/mypy

pytest: gateway-env rasa-env
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

train: gateway-env rasa-env
	$(VENV)/bin/triage train

bench: gateway-env rasa-env ## performance figures (see README)
	$(VENV)/bin/python bench/nlu_pipelines.py
	$(VENV)/bin/python bench/turns.py

clean:
	rm -rf $(VENV) $(RASA_VENV) var .pytest_cache .mypy_cache .ruff_cache rasa_side/*.egg-info
