# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create/refresh the virtualenv .venv (torch, tritonserver from the nvidia-pytriton wheel,
# DALI, ONNX Runtime, ...) and the perf_analyzer tool venv in .tools/perf.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= client,train,export,serve,dali,ray,dev
STAMP := $(VENV)/.installed
PERF_VENV := .tools/perf
PERF_STAMP := $(PERF_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup tools browser demo lint test test-fast bench clean configs constraints

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

# perf_analyzer: tritonclient 2.50.0 is the last build that runs on glibc 2.36 (docs/design.md);
# it lives in its own venv so the project keeps a current tritonclient. It needs libcudart.so.12
# (nvidia-cuda-runtime-cu12 in the same venv): bin/perf_analyzer becomes a wrapper that puts it on
# LD_LIBRARY_PATH, so the tool runs as typed; the binary itself is bin/perf_analyzer.bin.
tools: $(PERF_STAMP) browser

$(PERF_STAMP): Makefile constraints-perf.txt
	@dpkg -s libb64-0d >/dev/null 2>&1 || { command -v apt-get >/dev/null && \
	  (apt-get install -y -q libb64-0d >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null)); }
	test -x $(PERF_VENV)/bin/python || $(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/python -m pip install -q --upgrade pip
	$(PERF_VENV)/bin/python -m pip install -q -c constraints-perf.txt "tritonclient[all]==2.50.0" nvidia-cuda-runtime-cu12
	cd $(PERF_VENV)/bin && if [ "$$(head -c 4 perf_analyzer)" = "$$(printf '\177ELF')" ]; then mv -f perf_analyzer perf_analyzer.bin; fi
	printf '%s\n' '#!/bin/sh' '# perf_analyzer with its venv'"'"'s CUDA runtime on LD_LIBRARY_PATH (written by make tools)' \
	  'bin=$$(dirname "$$(readlink -f "$$0")")' \
	  'for d in "$$bin"/../lib/python3*/site-packages/nvidia/cuda_runtime/lib; do LD_LIBRARY_PATH="$$d$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}"; done' \
	  'export LD_LIBRARY_PATH' 'exec "$$bin/perf_analyzer.bin" "$$@"' > $(PERF_VENV)/bin/perf_analyzer
	chmod +x $(PERF_VENV)/bin/perf_analyzer
	touch $(PERF_STAMP)

# Chromium from the OS packages: the `vidcls report` test renders the page in it (headless). Where
# apt cannot install it (no root, no network) the install is skipped and that test says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null && \
	  (apt-get install -y -q -o DPkg::Lock::Timeout=300 chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q -o DPkg::Lock::Timeout=300 chromium >/dev/null)); } || \
	  echo "chromium could not be installed: the report's browser test will be skipped"

demo: setup
	$(VENV)/bin/vidcls demo

# The linter (rules in pyproject.toml: mistakes, not style) runs before every test run.
lint: setup
	$(VENV)/bin/ruff check .

test: lint tools
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(VENV)/bin/python -m pytest -m "not server and not slow" $(PYTEST_ARGS)

# Regenerate the checked-in gpu model repository configs from the config object.
configs: setup
	$(VENV)/bin/vidcls export --configs-only model_repository --target gpu

# Record the versions of the current .venv as the tested set (after a green 'make test').
constraints:
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .tools .pytest_cache
