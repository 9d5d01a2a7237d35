# edge-diffusion: every local workflow goes through these targets.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Local Node (npm "node" package) first: jsii warns on, and will drop, the system Node 20.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
TINY_MODEL := .cache/tiny-model
PYTEST_ARGS ?=
TLS ?=
TLS_DIR := .cache/tls
TLS_SERVER_NAME := inference.edge-diffusion.internal

.PHONY: setup synth test serve bench browser clean schema

setup: $(VENV)/.installed .venv-checkov/.installed node_modules/.installed browser

$(VENV)/.installed: requirements.txt requirements-serving.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 resolves to the local CPU build; never let a range pull a CUDA build into the dev venv.
	$(PY) -m pip install -q -r requirements.txt -r requirements-serving.txt -r requirements-dev.txt
	touch $@

# checkov pins dependencies that clash with the app's, so it gets its own venv.
.venv-checkov/.installed: requirements-checkov.txt
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q --upgrade pip
	.venv-checkov/bin/python -m pip install -q -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser test drives Debian's Chromium through Playwright (no browser download is possible here).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing: run 'sudo apt-get install chromium' (needed by the playground browser test)"; exit 1; \
	  fi; \
	fi

synth: $(VENV)/.installed node_modules/.installed
	cdk synth --quiet
	$(PY) -m tools.render_manifests --assembly cdk.out --out dist

# The config's JSON Schema and the field table in docs/cluster.md come from the edge_config models.
schema: $(VENV)/.installed
	$(PY) -m tools.config_reference

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

$(TINY_MODEL)/model_index.json: $(VENV)/.installed
	$(PY) -m serving tiny-model $(TINY_MODEL)

# TLS=1: HTTPS with a throwaway CA under .cache/tls (remade when older than 6 days; the leaf lasts 7).
serve: $(VENV)/.installed $(TINY_MODEL)/model_index.json
	port=$${PORT:-8080}; tls_args=()
	if [ -n "$(TLS)" ] && [ "$(TLS)" != 0 ]; then
	  if [ -z "$$(find $(TLS_DIR)/tls.crt -mtime -6 2>/dev/null)" ]; then
	    $(PY) -m serving dev-cert $(TLS_DIR) --server-name $(TLS_SERVER_NAME) >/dev/null
	  fi
	  tls_args=(--tls-cert-file $(TLS_DIR)/tls.crt --tls-key-file $(TLS_DIR)/tls.key --tls-ca-file $(TLS_DIR)/ca.crt \
	            --tls-server-name $(TLS_SERVER_NAME))
	  echo "TLS on: curl --cacert $(TLS_DIR)/ca.crt --connect-to $(TLS_SERVER_NAME):$$port:127.0.0.1:$$port https://$(TLS_SERVER_NAME):$$port/healthz"
	fi
	$(PY) -m serving serve --model $(TINY_MODEL) --device cpu --host $${HOST:-127.0.0.1} --port $$port "$${tls_args[@]}"

bench: $(VENV)/.installed
	$(PY) -m benchmarks.cpu

clean:
	rm -rf cdk.out dist .cache .pytest_cache
