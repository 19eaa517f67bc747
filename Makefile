# vesukit: every target creates or refreshes its own virtual environment from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVICE ?= cpu
DRY    ?= build/dry

.PHONY: help venv test submit-dry bench skill-lab kernel wheels kaggle-sim clean

help:
	@echo "make submit-dry   synthetic competition + tiny teachers -> predict -> validated submission.zip"
	@echo "make test         the test suite (CPU)"
	@echo "make bench        benchmarks against peers (results: docs/benchmarks.md)"
	@echo "make skill-lab    train 3 small teachers + a student on synth data, score every row"
	@echo "make kernel       generate the Kaggle notebook + kernel-metadata.json"
	@echo "make wheels       vendor the offline wheels (build_wheels.sh)"
	@echo "make kaggle-sim   run the notebook offline in a Kaggle-like environment (needs root)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

# The linter first (ruff, configured in pyproject.toml), then the tests.
test: $(STAMP)
	$(PY) -m ruff check .
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

# Three small teachers trained from labels, calibration, a distilled student, each row scored
# with the exact metric on held-back synthetic volumes (table: docs/benchmarks.md).
# CPU sizes by default; DEVICE=cuda trains larger ones on bigger volumes.
skill-lab: $(STAMP)
	PYTHONPATH=src $(PY) -m benchmarks.skill_lab --size $(DEVICE) --device $(DEVICE) --out build/skill-lab-$(DEVICE)

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
