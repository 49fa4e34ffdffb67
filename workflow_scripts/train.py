"""Rule train: one model for (dataset, method, σ, seed); resumes from params.checkpoint_dir. A method
of the user's own is imported from the class its configuration names (methods.<method>.module)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.training.driver import run_training
from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params

run_logged(
    snakemake.log[0],
    lambda: run_training(
        data_meta=snakemake.input.data,
        out_model=snakemake.output.model,
        checkpoint_dir=params.checkpoint_dir,
        dataset=wc.dataset,
        arch=params.arch,
        method=wc.method,
        sigma=float(wc.sigma),
        seed=int(wc.seed),
        hparams=dict(params.hparams),
        method_module=snakemake.config["methods"][wc.method].get("module"),
        device=params.device,
        threads=snakemake.threads,
        curve=dict(params.curve),
        out_curve=snakemake.output.curve,
        heldout_images=int(params.heldout),
        eval_indices=evaluation_subset(snakemake.input.data, params.eval),
        dataset_settings=snakemake.config["datasets"][wc.dataset],
    ),
)
