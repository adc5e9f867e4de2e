# Plain targets: `make run` installs and starts everything; `make test` installs and runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Daphne processes for `make run` (empty: runchat's default, one per core when REDIS_URL is set)
WORKERS ?=
# llama.cpp's default build targets the CPU it is built on (-march=native, AVX-512, AMX...), which
# crashed with a general protection fault on a VM that advertises AMX. A portable build
# (AVX2/FMA/F16C) runs everywhere we deploy and is fast enough for a 135M model.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: install install-dev run test lint fmt migrations-check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	@echo ">>> Installing requirements. The first install builds llama-cpp-python from source:"
	@echo ">>> about 5 minutes on 2 cores. pip reports progress below."
	$(BIN)/pip install --progress-bar on -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py runchat --host $(HOST) --port $(PORT) $(if $(WORKERS),--workers $(WORKERS))

test: install-dev
	$(BIN)/python -m pytest

fmt: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy conversations chatsite

migrations-check: install
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) staticfiles var
