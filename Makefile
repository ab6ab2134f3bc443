# Two commands matter: `make run` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8443
DEB_PACKAGES := lua5.1 lua-dkjson prometheus wrk

.PHONY: run test lint bench certs venv system-deps clean docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

certs/tls.crt: | venv
	$(PY) -m webhook certs generate --service workload-tagger --namespace workload-tagger --out certs \
		--san localhost --san 127.0.0.1 --san ::1

certs: venv
	rm -f certs/tls.crt && $(MAKE) --no-print-directory certs/tls.crt

run: venv certs/tls.crt
	$(PY) -m webhook serve --host $(HOST) --port $(PORT) --cert-file certs/tls.crt --key-file certs/tls.key \
		--plugin-source directory --plugins-dir examples/plugins

# Debian tools the tests use as references (real Lua 5.1 + dkjson, Prometheus, wrk); installed only when missing.
system-deps:
	@missing=0; for t in lua5.1 prometheus promtool wrk; do command -v $$t >/dev/null || missing=1; done; \
	test -f /usr/share/lua/5.1/dkjson.lua || missing=1; \
	if [ $$missing = 1 ]; then \
		echo "installing Debian packages: $(DEB_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	fi

lint: venv
	$(VENV)/bin/ruff check webhook tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: venv system-deps lint
	$(PY) -m pytest

# Tables, not pass/fail: server vs a bare aiohttp ceiling under wrk, the Lua engine vs DeepFlow's
# approach, audit/backfill throughput; then the soak and hostile-plugin tests at full length.
bench: venv system-deps certs/tls.crt
	$(PY) -m bench
	SOAK_SECONDS=90 $(PY) -m pytest -q -s tests/test_soak.py tests/test_hostile_plugins.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

docs: venv
	$(PY) -m tools.readme_settings
