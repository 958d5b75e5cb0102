# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both depend on `setup`, which is idempotent: it re-installs only when the lock file, setup.py or this file changes.
# --compile-bytecode: every Beam worker process imports Beam afresh; without .pyc files (and with
# PYTHONDONTWRITEBYTECODE set, as on CI) each one spent ~8 CPU-s compiling it instead of ~3 s starting.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(PYTHON) -m uv
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test lint test-slow bench lock clean image

$(STAMP): requirements.lock setup.py Makefile
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --user "uv==0.13.9" || $(PYTHON) -m pip install --quiet "uv==0.13.9"
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -r requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/deeplab demo --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# ruff (pinned in requirements.lock; settings in pyproject.toml): lint and format check, changes nothing.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: setup
	$(PY) bench/ingest.py

lock:
	$(UV) pip compile requirements.in --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache

# The pipeline image (Dockerfile) for Kubeflow tasks and Dataflow workers: `make image IMAGE=gcr.io/PROJECT/deeplab-tfx:TAG`.
IMAGE ?= deeplab-tfx:latest
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image: no 'docker' on PATH; install Docker (or build the Dockerfile elsewhere, e.g. with Cloud Build)" >&2; exit 1; }
	docker build -t $(IMAGE) .
