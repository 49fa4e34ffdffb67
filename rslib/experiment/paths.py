"""Every file under ``data/`` and ``results/``, in one place.

Each attribute of :class:`Paths` is a template with Snakemake's wildcards in braces
(``{dataset}``, ``{method}``, ``{sigma}``, ``{seed}``, ``{shard}``, ``{ensemble}``, ``{scheme}``,
``{fit}``, ``{table}``, ``{figure}``): the rules use them as outputs, and the plan fills them for
its slots (:meth:`Paths.fill`). The layout is the workflow's contract with the results a user
already has: change a template and their results are no longer found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The folder of one model slot and of one ensemble, below a stage's folder.
MODEL = "{dataset}/{method}/sigma{sigma}/seed{seed}"
ENSEMBLE = "{dataset}/sigma{sigma}/{ensemble}"


@dataclass(frozen=True)
class Paths:
    """The templates of one run: ``data`` is ``data_dir``, ``results`` is ``results_dir``."""

    data: str
    results: str

    @staticmethod
    def fill(template: str, **wildcards: Any) -> str:
        return template.format(**wildcards)

    # --- data and models ------------------------------------------------------------------------
    @property
    def data_meta(self) -> str:
        return f"{self.data}/{{dataset}}/meta.json"

    @property
    def trained_model(self) -> str:
        return f"{self.results}/models/{MODEL}/model.pt"

    @property
    def training_curve(self) -> str:
        return f"{self.results}/models/{MODEL}/training_curve.csv"

    @property
    def training_state(self) -> str:
        """Per-epoch training state, outside the rule's declared outputs (Snakemake deletes those
        before a retry; training resumes from here)."""
        return f"{self.results}/checkpoints/{MODEL}"

    @property
    def imported_model(self) -> str:
        return f"{self.results}/imported/{MODEL}/model.pt"

    # --- certification --------------------------------------------------------------------------
    @property
    def certificate_shard(self) -> str:
        return f"{self.results}/certify/{MODEL}/shards/{{shard}}.tsv"

    @property
    def certificate_shard_record(self) -> str:
        return f"{self.results}/certify/{MODEL}/shards/{{shard}}.json"

    @property
    def certificate(self) -> str:
        return f"{self.results}/certify/{MODEL}/certify.tsv"

    @property
    def certificate_record(self) -> str:
        return f"{self.results}/certify/{MODEL}/certify.json"

    @property
    def published_certificate(self) -> str:
        return f"{self.results}/published/{{dataset}}/{{method}}/sigma{{sigma}}/certify.tsv"

    @property
    def published_record(self) -> str:
        return f"{self.results}/published/{{dataset}}/{{method}}/sigma{{sigma}}/certify.json"

    # --- ensembles ------------------------------------------------------------------------------
    @property
    def member_outputs(self) -> str:
        return f"{self.results}/outputs/{MODEL}/shards/{{shard}}.npz"

    @property
    def pseudo_outputs(self) -> str:
        return f"{self.results}/outputs/{MODEL}/pseudo/{{shard}}.npz"

    @property
    def ensemble_weights(self) -> str:
        return f"{self.results}/ensembles/{ENSEMBLE}/weights-{{fit}}.json"

    @property
    def ensemble_certificate(self) -> str:
        return f"{self.results}/ensembles/{ENSEMBLE}/{{scheme}}/certify.tsv"

    @property
    def ensemble_record(self) -> str:
        return f"{self.results}/ensembles/{ENSEMBLE}/{{scheme}}/certify.json"

    @property
    def adaptive(self) -> str:
        return f"{self.results}/ensembles/{ENSEMBLE}/adaptive.json"

    @property
    def adaptive_tsv(self) -> str:
        return f"{self.results}/ensembles/{ENSEMBLE}/adaptive.tsv"

    # --- the paper's artefacts and the run's summaries ------------------------------------------
    @property
    def table(self) -> str:
        return f"{self.results}/{{table}}.tex"

    @property
    def table_csv(self) -> str:
        return f"{self.results}/{{table}}.csv"

    @property
    def figure(self) -> str:
        return f"{self.results}/{{figure}}.pdf"

    @property
    def figure_csv(self) -> str:
        return f"{self.results}/{{figure}}.csv"

    @property
    def curves(self) -> str:
        return f"{self.results}/curves/{{dataset}}_sigma{{sigma}}.pdf"

    def result(self, name: str) -> str:
        """A file directly in the results folder: ``comparison.md``, ``certified_accuracy.tex``…"""
        return f"{self.results}/{name}"

    # --- every job's log and benchmark ----------------------------------------------------------
    def log(self, name: str) -> str:
        """``results/logs/<name>.log``: ``name`` is the rule's folder and file (``train/{MODEL}``)."""
        return f"{self.results}/logs/{name}.log"

    def benchmark(self, name: str) -> str:
        """``results/benchmarks/<name>.tsv``, beside the log (``rslib.report.run_summary`` reads them)."""
        return f"{self.results}/benchmarks/{name}.tsv"
