# The interface every developer and CI uses; see README.md.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
PYTEST_ARGS ?=
BENCH_ARGS  ?=
RELIABILITY_ARGS ?=

.PHONY: setup test lint unit demo bench reliability clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml tools/setup.sh
	tools/setup.sh
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint unit

demo: setup
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" examples/demo.sh

bench: setup
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,max,rounds
	$(PY) -m benchmarks.compare $(BENCH_ARGS)
	$(PY) -m benchmarks.revocation
	$(PY) -m benchmarks.rotation

# Launches under injected faults, the canary sweep, residue, fuzzing (root; ~30 min).
reliability: setup
	$(PY) -m reliability $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
