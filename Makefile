# Quick start (README):  make demo   |   make test
# Both create the virtual environment .venv on first use (torch, snakemake, the SLURM plugin, rslib).

SHELL := bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint env slurm-install clean-demo

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## Run the whole workflow on the embedded digits demo (CPU, a few minutes).
demo: $(STAMP)
	$(BIN)/snakemake --configfile demo/config.yaml --cores $(CORES) all
	@echo
	@column -s, -t < results/demo/certified_accuracy.csv
	@echo
	@cut -d, -f1-3,5,7- results/demo/ensembles.csv | column -s, -t
	@echo
	@column -s, -t < results/demo/adaptive.csv
	@echo
	@echo "Tables: results/demo/certified_accuracy.tex, results/demo/ensembles.tex  (CSV beside them)"
	@echo "        results/demo/adaptive.csv (CertifyAdp)"
	@echo "Figure: results/demo/certified_accuracy.pdf"

## Run every test: unit, real Snakemake runs, and the workflow through a real one-node SLURM cluster.
test: $(STAMP) slurm-install
	$(BIN)/python -m pytest

## Install Debian's slurm-wlm and munge for the SLURM integration test (root only; skipped otherwise).
slurm-install:
	@if ! command -v sbatch >/dev/null && [ "$$(id -u)" = 0 ]; then bash tests/slurm/cluster.sh install; fi

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile demo/config.yaml

clean-demo:
	rm -rf results/demo
