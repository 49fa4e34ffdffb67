# Quick start (README):  make demo   |   make test
# Both create the virtual environment .venv on first use (torch, snakemake, the SLURM plugin, rslib).

SHELL := bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint env slurm-install latex-install clean-demo device-check

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## Run the whole workflow on the embedded digits demo (CPU, a few minutes).
demo: $(STAMP)
	$(BIN)/snakemake --configfile demo/config.yaml --cores $(CORES) all
	$(BIN)/snakemake --configfile demo/config.yaml --report results/demo/report.html
	@echo
	@column -s, -t < results/demo/certified_accuracy.csv
	@echo
	@cut -d, -f1-3,5,7- results/demo/ensembles.csv | column -s, -t
	@echo
	@column -s, -t < results/demo/adaptive.csv
	@echo
	@sed -n -e '/^\*\*/{s/\*\*//g;p}' -e 's/^- Table/Table/p' results/demo/comparison.md
	@echo
	@echo "Paper:   results/demo/table{1..8}.tex, results/demo/figure{1,3}.pdf, results/demo/curves/*.pdf"
	@echo "Compare: results/demo/comparison.md (paper vs this run, a verdict per cell; digits stands in for every dataset)"
	@echo "Cost:    results/demo/cost_estimate.md"
	@echo "Also:    results/demo/certified_accuracy.tex, results/demo/ensembles.tex, results/demo/adaptive.csv"
	@echo "Report:  results/demo/report.html (Snakemake report: every table and figure with captions and provenance)"

## Run every test: unit, real Snakemake runs, the workflow through a real one-node SLURM cluster,
## and pdflatex on every .tex the workflow writes.
test: $(STAMP) slurm-install latex-install
	$(BIN)/python -m pytest

## Install Debian's slurm-wlm and munge for the SLURM integration test (root only; skipped otherwise).
slurm-install:
	@if ! command -v sbatch >/dev/null && [ "$$(id -u)" = 0 ]; then bash tests/slurm/cluster.sh install; fi

## One prepared check of every CUDA path and the GPU speed figures (GPU machine; see README).
DEVICE_CHECK_OUT ?= results/device-check
device-check: $(STAMP)
	$(BIN)/python benchmarks/device_check.py --out $(DEVICE_CHECK_OUT)

## Install Debian's pdflatex for the LaTeX compile tests (root only; skipped otherwise, failed under CI=true).
## latex-extra brings the standalone class of the tables; --no-install-recommends keeps it to about a minute.
latex-install:
	@if ! command -v pdflatex >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			texlive-latex-base texlive-latex-recommended texlive-latex-extra; fi

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile demo/config.yaml

clean-demo:
	rm -rf results/demo
