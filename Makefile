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

# the exact versions of envs/constraints.txt (pyproject.toml gives the supported ranges)
$(STAMP): pyproject.toml envs/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c envs/constraints.txt -e '.[dev]'
	@touch $@

## Run the whole workflow on the embedded digits demo (CPU, minutes), then print its summary:
## every model and ensemble (3 decimals, best per sigma marked), the verdicts, stage times, artefacts.
demo: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/snakemake --configfile demo/config.yaml --cores $(CORES) all && \
	$(BIN)/snakemake --configfile demo/config.yaml --report results/demo/report.html && \
	echo && $(BIN)/python -m rslib.report.run_summary results/demo --wall-seconds $$(( $$(date +%s) - start ))

## Run every test: unit, real Snakemake runs, the workflow through a real one-node SLURM cluster,
## and pdflatex on every .tex the workflow writes.
test: $(STAMP) slurm-install latex-install
	$(BIN)/python -m pytest

## Install Debian's slurm-wlm and munge for the SLURM integration test (root only; skipped otherwise).
slurm-install:
	@if ! command -v sbatch >/dev/null && [ "$$(id -u)" = 0 ]; then bash tests/slurm/cluster.sh install; fi

## One prepared check of every CUDA path and the GPU speed figures (GPU machine; see docs/operations.md).
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
