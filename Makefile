# AutoAnnotator — every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV ?= .venv
LS_VENV ?= .venv-ls
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 9090
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# llama-cpp-python (requirements-dev.txt) builds llama.cpp from source; a -march=native build segfaulted at the first
# completion on an AVX-512/AMX Xeon, so it is built for a portable AVX2 CPU. pip caches the built wheel: after a
# native build, `pip cache remove llama_cpp_python` before reinstalling.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: runtime install run stack test unit lint e2e bench load ls-install browser clean

# `make run` installs what the server needs; the test tools (and llama.cpp, built from source) only come with
# `make install`, which `make test` runs. --no-compile: Python compiles what the server imports as it imports it,
# not every module of every package at install time.
runtime: $(VENV)/.runtime

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q --no-compile -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

run: runtime
	HOST=$(HOST) PORT=$(PORT) $(BIN)/autoannotator serve

# The queue topology of docker-compose.yml (--profile queue) without Docker: Redis, the backend, two rq workers.
stack: runtime
	HOST=$(HOST) PORT=$(PORT) $(BIN)/autoannotator stack

test: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# The decision core, the store and the rules: no models, seconds.
unit: install
	$(BIN)/pytest -q tests/unit

# The page's test drives a real headless Chromium: Debian's package, never a downloaded browser.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

lint: install
	$(BIN)/ruff check .

# A real Label Studio 1.23.2 in its own venv (it pins its own SDK, Django and rq).
ls-install: $(LS_VENV)/.installed

$(LS_VENV)/.installed:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q label-studio==1.23.2
	touch $@

e2e: install ls-install
	LABEL_STUDIO_BIN=$(abspath $(LS_VENV))/bin/label-studio $(BIN)/pytest -q -m e2e tests/e2e

# Cold and warm /predict beside the per-request pattern, re-prediction of 10,000 known tasks, a 10,000-task retrieve.
bench: install
	$(BIN)/python bench/predict_bench.py --out docs/bench-predict.json
	$(BIN)/python bench/repredict_bench.py --tasks 10000 --out docs/bench-repredict.json
	$(BIN)/python bench/retrieve_bench.py --out docs/bench-retrieve.json

load: install
	$(BIN)/python bench/load_run.py --out docs/bench-load.json

clean:
	rm -rf data .pytest_cache .ruff_cache .e2e
