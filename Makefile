# Two commands on a fresh machine: `make train` and `make test`. Both create .venv/ when needed.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision pinned to the builds these machines hold on disk (no multi-GB CUDA download)
TORCH  := torch==2.14.1 torchvision==0.29.1
ARGS   ?=
# `make train`'s demo: the conditional DCGAN (cbn + hinge), 36 epochs in bf16 autocast — 1.5x the epochs
# of float32 in the same ~2 min on these 2 CPU cores (experiments/demo/README.md; a CPU without bf16
# units trains in float32, one warning, ~3 min); DEMO= gives the plain defaults
DEMO   ?= model=cdcgan trainer.precision=bf16-mixed trainer.max_epochs=36

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
