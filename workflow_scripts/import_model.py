"""Rule import_model: a released checkpoint (Cohen / SmoothAdv / MACER / Consistency / SmoothMix
layout) as an rslib model file for its grid slot, after the plausibility check on the first
evaluation images (rslib.certification.plausibility)."""

import sys

snakemake = snakemake  # noqa: F821 (injected by Snakemake)
sys.path.insert(0, snakemake.scriptdir.rsplit("/", 1)[0])  # rslib from this checkout, also in conda envs

from rslib.runtime import provenance
from rslib.data.load import load_split
from rslib.certification.plausibility import CheckImages, import_released
from rslib.data.load import evaluation_subset
from rslib.runtime.jobs import run_logged

wc, params = snakemake.wildcards, snakemake.params


def main():
    meta = snakemake.input.data
    check = CheckImages.from_dataset(load_split(meta, "test"), evaluation_subset(meta, params.evaluation),
                                     params.noise_seed)
    record = import_released(
        snakemake.input.released,
        params.format,
        snakemake.output.model,
        check=check,
        accept_implausible=params.accept_implausible,
        entry=f"methods.{wc.method}.{wc.dataset}.released.{wc.sigma}",
        dataset=wc.dataset,
        arch=params.arch,
        sigma=float(wc.sigma),
        method=wc.method,
        seed=int(wc.seed),
        input_layer=params.input_layer,
        allow_pickle=params.allow_pickle,
        provenance=provenance.collect("cpu", {"format": params.format, "input_layer": params.input_layer}),
    )
    check = record["plausibility"]
    verdict = "passed" if check["passed"] else f"accepted anyway (accept_implausible): {check['problem']}"
    print(f"imported {record['source']} ({record['format']}, input layer {record['input_layer']}, "
          f"sha256 {record['sha256'][:12]}…) as {snakemake.output.model}; plausibility: "
          f"{check['accuracy']:.0%} of {check['images']} noisy evaluation images (threshold {check['threshold']:.0%}), "
          f"{verdict}", file=sys.stderr)


run_logged(snakemake.log[0], main)
