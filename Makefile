# The README's commands. Each one sets up what it needs on a fresh machine.
#   make demo   install, then run the quickstart notebook's training in a real Jupyter kernel
#   make test   install with the test extra, then run every test
#   make lab    open JupyterLab on notebooks/
#   make bench  run the benchmarks (they print tables; see bench/RESULTS.md)
#   make gpu-check  on a GPU machine: every gpu-marked test and the GPU benchmarks, in 8 minutes
#   make gpu-wheels  the wheels gpu-check needs, into .whl/, for a GPU machine without network

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip
# torch is installed first and pinned, so that the package's own `torch>=2.1` is already met:
# on a machine without a GPU this keeps pip from pulling gigabytes of CUDA wheels.
TORCH ?= torch==2.13.0
# extra pip arguments for that torch install, e.g. --index-url of PyTorch's CPU-only wheels
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lab bench install install-test browser js-test clean gpu-check gpu-wheels

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PIP) install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PIP) install --quiet ".[demo]"

install-test: $(PY) browser
	$(PIP) install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PIP) install --quiet ".[test,demo]"

demo: install
	cd notebooks && ../$(PY) run_notebook.py quickstart.ipynb

test: install-test js-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The panel's TypeScript: type-check and unit tests (vitest). jlpm comes with JupyterLab.
js-test: install-test
	cd labextension && ../$(BIN)/jlpm install --immutable && ../$(BIN)/jlpm test

lab: install
	$(PIP) install --quiet "jupyterlab>=4,<5"
	$(BIN)/jupyter lab --notebook-dir=notebooks

bench: install-test
	$(PIP) install --quiet ".[bench]"
	$(PY) bench/launch_overhead.py
	$(PY) bench/endpoint.py
	$(PY) bench/cell_trainer.py
	$(PY) bench/gpu_parity.py
	$(PY) bench/background.py
	$(PY) bench/sweep.py

# Every GPU claim in one run (bench/gpu_check.py), within 8 minutes: .venv/gpu-check sees the
# packages of $(PYTHON) (an image's CUDA torch) and gets what is missing, from .whl/ when it holds
# wheels (make gpu-wheels, on a machine with network, for a GPU machine without), else from the
# index; where its torch has no CUDA, GPU_TORCH is installed (PyPI's Linux wheels are CUDA builds;
# GPU_TORCH_PIP_ARGS can name another index). Figures on stdout, and in $$OUT when it is set.
GPU_TORCH ?= torch
GPU_TORCH_PIP_ARGS ?=
GPU_PYTHON_VERSION ?= 3.12
gpu-check:
	TORCH="$(GPU_TORCH)" TORCH_PIP_ARGS="$(GPU_TORCH_PIP_ARGS)" $(PYTHON) bench/gpu_check.py

gpu-wheels:
	$(PYTHON) bench/gpu_check.py --download-wheels --wheel-python $(GPU_PYTHON_VERSION)

# The browser test drives Debian's Chromium. Installed when we are root on Debian; otherwise
# the test is skipped with a message that says how to install it.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Chromium is not installed: the browser test will be skipped (apt-get install chromium)."; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) build dist lightning_magic/labextension labextension/lib labextension/node_modules
