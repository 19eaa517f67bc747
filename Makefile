# vesukit: every target creates or refreshes its own virtual environment from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVICE ?= cpu
DRY    ?= build/dry

.PHONY: help venv test submit-dry bench kernel wheels kaggle-sim clean

help:
	@echo "make submit-dry   synthetic competition + tiny teachers -> predict -> validated submission.zip"
	@echo "make test         the test suite (CPU)"
	@echo "make bench        benchmarks against peers (results: docs/benchmarks.md)"
	@echo "make kernel       generate the Kaggle notebook + kernel-metadata.json"
	@echo "make wheels       vendor the offline wheels (build_wheels.sh)"
	@echo "make kaggle-sim   run the notebook offline in a Kaggle-like environment (needs root)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The dry run, then the same notebook offline in a Kaggle-like environment where this machine
# can run it (SIM=auto: root and `unshare`; otherwise one line says why it was skipped).
# SIM=1 requires the simulation, SIM=0 skips it.
SIM ?= auto
submit-dry: $(STAMP)
	DEVICE=$(DEVICE) DRY=$(DRY) PY=$(PY) bash scripts/submit_dry.sh
	@SIM=$(SIM) PY=$(PY) KAGGLE_SIM_ARGS="$(KAGGLE_SIM_ARGS)" bash scripts/sim_after_dry.sh

bench: $(STAMP)
	PYTHONPATH=src $(PY) -m benchmarks.run_all $(BENCH_ARGS)

kernel: $(STAMP)
	$(PY) -m vesukit.kernelgen

wheels:
	bash build_wheels.sh

# The notebook run as on Kaggle: image-like venv, fake /kaggle, network cut (`unshare -n`).
# Needs root (mount namespace) and 3-6 min on 2 cores; not part of `make test`.
# KAGGLE_SIM_ARGS=--install-only checks the offline install alone.
KAGGLE_SIM_ARGS ?=
kaggle-sim: $(STAMP) wheels
	PYTHONPATH=src $(PY) scripts/kaggle_sim.py $(KAGGLE_SIM_ARGS)

clean:
	rm -rf build .pytest_cache
