# bnnbench — the two commands for a fresh machine are `make demo` and `make test`.
# Everything they need is installed here: Debian packages (compiler) when missing, then a
# virtual environment with the project and its dev extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv toolchain native torch-env test lint demo bench clean

all: native

toolchain:
	@if ! command -v gcc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then \
	  echo "installing the C toolchain (gcc, make) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc make libc6-dev; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

native: toolchain
	$(MAKE) -C native

# PyTorch + its ONNX exporters live in their own venv (.venv-torch): the dynamo exporter needs
# onnx >= 1.18, which TensorFlow 2.16 (LCE's converter) cannot share a venv with.
torch-env:
	bash tools/torch_env.sh

lint: venv
	$(BIN)/ruff check .

test: venv native torch-env lint
	$(BIN)/pytest -q

demo: venv native
	$(BIN)/python scripts/demo.py

bench: venv native
	$(BIN)/python native/bench/bench_zoo.py

clean:
	$(MAKE) -C native clean
	rm -rf build *.egg-info .pytest_cache .ruff_cache
