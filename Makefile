# concilia — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: setup run cluster test lint format messages lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml setup.py media/fanout.c media/fanout_build.py
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

run: setup
	CONCILIA_ENV=$${CONCILIA_ENV:-dev} $(BIN)/concilia db upgrade
	CONCILIA_ENV=$${CONCILIA_ENV:-dev} $(BIN)/concilia demo --if-empty
	CONCILIA_ENV=$${CONCILIA_ENV:-dev} $(BIN)/concilia serve --host $(HOST) --port $(PORT)

# The deployment of deploy/ rehearsed on loopback: nginx (Debian package) in front of two nodes
# sharing PostgreSQL (database concilia_cluster) and Redis; see deploy/README.md. Ctrl-C stops it.
cluster: setup
	$(BIN)/python -m deploy.cluster --port $(PORT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-extract the translatable strings and merge them into the Italian catalog.
messages: setup
	$(BIN)/pybabel extract -F babel.cfg -k N_ -o core/locale/messages.pot .
	$(BIN)/pybabel update -i core/locale/messages.pot -d core/locale -l it --no-fuzzy-matching

# Re-resolve the pinned dependency set from pyproject.toml (needs network access to PyPI).
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet -o requirements.lock

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
