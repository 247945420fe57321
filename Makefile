# Two commands on a fresh machine: `make train` and `make test`. Both create .venv/ when needed.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision pinned to the builds these machines hold on disk (no multi-GB CUDA download)
TORCH  := torch==2.14.1 torchvision==0.29.1
ARGS   ?=
# `make train`'s demo: the conditional DCGAN (cbn + hinge), 40 epochs in bf16 autocast with channels_last
# (~1.6x the epochs of float32 in the same ~2.3 min on these 2 CPU cores; a CPU without bf16 units
# trains in float32, one warning, ~3.5 min), translation on a quarter of D's images so the brains keep
# the real spread of positions (experiments/demo/README.md); DEMO= gives the plain defaults. The 2 min 20 s
# cap keeps part 1's 5 minutes with set-up on a slower 2-core machine (it stops there after ~25-28 of the 40
# epochs; fresh clones took 4:42-5:05 with a 2:40 cap); a machine that trains the 40 epochs sooner never reaches it
DEMO   ?= model=cdcgan trainer.precision=bf16-mixed trainer.max_epochs=40 model.augment_p=0.25 \
          trainer.strategy.channels_last=true trainer.max_time=00:00:02:20

.PHONY: setup train test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ "$$free" -lt 6500000 ]; then \
	  echo "warning: .venv takes about 6.2 GB (torch's CUDA build, the one on this disk); $$((free / 1048576)) GB free here" >&2; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile $(TORCH) -e '.[dev,sweep]' 2>&1 | grep -v "is ignored: it is neither"; \
	  test $${PIPESTATUS[0]} -eq 0
	@# byte-compiled on all cores (pip compiles on one: ~31 s against ~24 s on 2); a file that does not compile
	@# (torch ships one in Python 3.12 syntax) only goes without its .pyc, as pip leaves it
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m ganlab.train $(DEMO) $(ARGS)

# pytest-xdist: one worker per core (the tests spend most of their time in single-threaded CLI processes,
# forked from pre-imported libraries: tests/forkserver.py; GANLAB_TEST_FRESH_PROCESSES=1 starts each afresh)
test: $(STAMP)
	$(PY) -m pytest -q -n auto $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not slow" $(ARGS)

bench: $(STAMP)
	$(PY) experiments/bench_throughput.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
