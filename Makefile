# bnnbench — the two commands for a fresh machine are `make demo` and `make test`.
# Everything they need is installed here: Debian packages (compiler) when missing, then a
# virtual environment with the project and its dev extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv toolchain system-deps native torch-env test test-fast lint demo bench clean

all: native

toolchain:
	@if ! command -v gcc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then \
	  echo "installing the C toolchain (gcc, make) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc make libc6-dev; \
	fi

# What the fleet tests drive for real: an OpenSSH server, the adb client, qemu-user for the
# emulated boards, the ARM cross compilers for the static CLIs, shellcheck for deploy/ scripts,
# PostgreSQL (its server binaries: tests/test_migrations.py starts a throwaway cluster),
# systemd-analyze (verifies the agent unit in deploy/).
# Debian package per tool.
SYSTEM_TOOLS := /usr/sbin/sshd:openssh-server ssh-keygen:openssh-client adb:adb \
  qemu-aarch64-static:qemu-user-static qemu-aarch64:qemu-user \
  aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu /usr/aarch64-linux-gnu/lib/libc.a:libc6-dev-arm64-cross \
  arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf /usr/arm-linux-gnueabihf/lib/libc.a:libc6-dev-armhf-cross \
  shellcheck:shellcheck chromium:chromium pg_ctlcluster:postgresql \
  systemd-analyze:systemd
system-deps: toolchain
	@missing=""; for pair in $(SYSTEM_TOOLS); do t=$${pair%%:*}; p=$${pair#*:}; \
	  if [ "$${t#/}" != "$$t" ]; then [ -e "$$t" ] || missing="$$missing $$p"; \
	  else command -v "$$t" >/dev/null 2>&1 || missing="$$missing $$p"; fi; done; \
	if [ -n "$$missing" ]; then echo "installing with apt-get:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $$missing; fi

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
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Everything; a missing sshd/adb/qemu is a failure here, not a skip. Every binary the tests run
# is built first (their own make calls are then no-ops, and two workers never compile into one
# folder), then the suite on three workers, each file whole on one, then the serial tests.
PYTEST_PAR := -n 3 --dist loadfile
test: venv native system-deps torch-env lint
	$(MAKE) -C native -j2 test-builds cross-test-builds
	$(BIN)/pytest -q $(PYTEST_PAR) -m "not serial" --durations=25
	$(BIN)/pytest -q -m serial

# the inner loop: no slow, cross-built/emulated, browser or PostgreSQL tests
test-fast: venv native lint
	$(BIN)/pytest -q $(PYTEST_PAR) -m "not slow and not cross and not browser and not postgres and not serial" --durations=15

demo: venv native
	$(BIN)/python scripts/demo.py

bench: venv native
	$(BIN)/python native/bench/bench_zoo.py

clean:
	$(MAKE) -C native clean
	rm -rf build *.egg-info .pytest_cache .ruff_cache
