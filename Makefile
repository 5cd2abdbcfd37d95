# Two commands on a fresh machine:  `make demo`  (the embedded default job)  and  `make test`.
# Both create .venv and install what they need. On CPU machines torch comes from the CPU wheel
# pinned below; GPU users run `make TORCH_SPEC=torch demo` (or install a CUDA torch into .venv first:
# pip keeps an installed torch that satisfies the range in pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fourds-installed

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fourds demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# The benchmark suite, one report in runs/bench/<date>/ (about 10 minutes on 2 CPU cores);
# `make bench BENCH_ARGS=--quick` for a 1-2 minute smoke run. See docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
