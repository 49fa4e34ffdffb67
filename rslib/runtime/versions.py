"""Per-stage algorithm versions.

Snakemake does not see edits inside ``rslib``; the workflow puts these numbers into each
rule's ``params`` so that bumping one reruns exactly the stage whose algorithm changed
(and everything downstream of it). Bump a number when a change alters that stage's output.
"""



STAGE_VERSIONS: dict[str, int] = {
    "data": 1,
    "train": 2,
    "certify": 1,
    "ensemble": 2,
    "report": 5,
}
