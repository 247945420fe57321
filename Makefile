# Two commands on a fresh machine: `make train` and `make test`. Both create .venv/ when needed.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision pinned to the builds these machines hold on disk (no multi-GB CUDA download)
TORCH  := torch==2.14.1 torchvision==0.29.1
ARGS   ?=
# `make train`'s demo: the conditional DCGAN (cbn + hinge) for 24 epochs, the best measured within the
# demo's ~2 min of training on 2 CPU cores (experiments/quality/README.md); DEMO= gives the plain defaults
DEMO   ?= model=cdcgan trainer.max_epochs=24

.PHONY: setup train test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH) -e '.[dev,sweep]' 2>&1 | grep -v "is ignored: it is neither"; \
	  test $${PIPESTATUS[0]} -eq 0
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m ganlab.train $(DEMO) $(ARGS)

# pytest-xdist: one worker per core (the tests spend most of their time in single-threaded subprocesses)
test: $(STAMP)
	$(PY) -m pytest -q -n auto $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) experiments/bench_throughput.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
