# The paper's artefacts from the certification TSVs, training curves and timings only: cheap,
# local, and rebuilt on a cosmetic change without retraining or recertifying anything.
# `snakemake results/table1.tex` builds exactly what Table 1 needs (rslib.report.tables).


rule paper_table:
    input:
        certificates=lambda wc: [source_certificate(s) for s in artefact_sources(wc.table)],
        curves=lambda wc: [source_curve(s) for s in artefact_sources(wc.table) if s.has_curve],
        members=lambda wc: [source_certificate(s) for s in artefact_members(wc.table)],
        # the further seeds of trained single-model rows: seed spread and the bootstrap over seeds
        seeds=lambda wc: [certificate_path(**m) for s in artefact_sources(wc.table) for m in source_seed_models(s)[1:]],
        # certify.json beside each certificate: the devices behind the time cells
        records=lambda wc: [source_record(s) for s in artefact_sources(wc.table)],
        member_records=lambda wc: [source_record(s) for s in artefact_members(wc.table)],
    output:
        tex=report(f"{RESULTS}/{{table}}.tex", caption="../report/tables.rst", category="Tables",
                   labels={"table": "{table}"}),
        csv=f"{RESULTS}/{{table}}.csv",
    params:
        sources=lambda wc: [vars(s) for s in artefact_sources(wc.table)],
        members=lambda wc: [vars(s) for s in artefact_members(wc.table)],
        hparams=lambda wc: [source_hparams(s) for s in artefact_sources(wc.table)],
        seed_counts=lambda wc: [len(source_seed_models(s)[1:]) for s in artefact_sources(wc.table)],
        deviations=lambda wc: [source_deviations(s, wc.table) for s in artefact_sources(wc.table)],
        uncertainty=dict(config["report"]["bootstrap"], seed_statistics=PAPER["seed_statistics"]),
        dataset=lambda wc: artefact_dataset(wc.table, PAPER),
        version=STAGE_VERSIONS["report"],
    wildcard_constraints:
        table="table[1-8]",
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/paper/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper/{{table}}.tsv",
    localrule: True
    script:
        "../workflow_scripts/paper_table.py"


rule paper_figure:
    input:
        # Figure 1 is drawn from the training curves alone
        certificates=lambda wc: [] if wc.figure == "figure1" else [source_certificate(s) for s in artefact_sources(wc.figure)],
        curves=lambda wc: [source_curve(s) for s in artefact_sources(wc.figure) if s.has_curve],
    output:
        pdf=report(f"{RESULTS}/{{figure}}.pdf", caption="../report/figures.rst", category="Figures",
                   labels={"figure": "{figure}"}),
        csv=f"{RESULTS}/{{figure}}.csv",
    params:
        sources=lambda wc: [vars(s) for s in artefact_sources(wc.figure)],
        sigma=lambda wc: PAPER[f"{wc.figure}_sigma"],
        version=STAGE_VERSIONS["report"],
    wildcard_constraints:
        figure="figure[13]",
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/paper/{{figure}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper/{{figure}}.tsv",
    localrule: True
    script:
        "../workflow_scripts/paper_figure.py"


rule summary:
    input:
        certificates=[certificate_path(**m) for m in MODELS],
    output:
        table=f"{RESULTS}/certified_accuracy.tex",
        csv=f"{RESULTS}/certified_accuracy.csv",
        figure=f"{RESULTS}/certified_accuracy.pdf",
    params:
        models=MODELS,
        radii=config["report"]["radii"],
        max_radius=config["report"]["figure_max_radius"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary.tsv",
    localrule: True
    script:
        "../workflow_scripts/summary.py"


rule ensemble_summary:
    input:
        certificates=[ensemble_certificate_path(**e) for e in ENSEMBLES],
        adaptive=[adaptive_path(**e) for e in ADAPTIVE],
    output:
        table=f"{RESULTS}/ensembles.tex",
        csv=f"{RESULTS}/ensembles.csv",
        adaptive=f"{RESULTS}/adaptive.csv",
    params:
        ensembles=ENSEMBLES,
        evaluation=[ensemble_evaluation(e["dataset"]) for e in ENSEMBLES],
        adaptive=ADAPTIVE,
        radii=config["report"]["radii"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/ensemble_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/ensemble_summary.tsv",
    localrule: True
    script:
        "../workflow_scripts/ensemble_summary.py"


rule comparison:
    input:
        reported=REPORTED,
        tables=expand(f"{RESULTS}/table{{k}}.csv", k=range(1, 9)),
    output:
        md=f"{RESULTS}/comparison.md",
        tex=report(f"{RESULTS}/comparison.tex", caption="../report/comparison.rst", category="Comparison"),
        csv=report(f"{RESULTS}/comparison.csv", caption="../report/comparison.rst", category="Comparison"),
        summary=report(f"{RESULTS}/comparison_summary.csv", caption="../report/comparison_summary.rst",
                       category="Comparison"),
    params:
        datasets=", ".join(f"{k}: {v}" for k, v in PAPER.items() if k in ("main", "svhn", "imagenet")),
        time_tolerance=config["report"]["time_tolerance"],
        level=config["report"]["bootstrap"]["level"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/paper/comparison.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper/comparison.tsv",
    localrule: True
    script:
        "../workflow_scripts/comparison.py"


rule certified_accuracy_curves:
    input:
        certificates=lambda wc: [source_certificate(s) for s in curve_sources(wc.dataset, wc.sigma)],
    output:
        report(f"{RESULTS}/curves/{{dataset}}_sigma{{sigma}}.pdf", caption="../report/curves.rst", category="Curves",
               labels={"dataset": "{dataset}", "sigma": "{sigma}"}),
    params:
        sources=lambda wc: [vars(s) for s in curve_sources(wc.dataset, wc.sigma)],
        max_radius=config["report"]["figure_max_radius"],
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/paper/curves_{{dataset}}_sigma{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper/curves_{{dataset}}_sigma{{sigma}}.tsv",
    localrule: True
    script:
        "../workflow_scripts/certified_accuracy_curves.py"


rule provenance_table:
    input:
        models=[certificate_path(**m).replace("certify.tsv", "certify.json") for m in MODELS],
        ensembles=[ensemble_certificate_path(**e).replace("certify.tsv", "certify.json") for e in ENSEMBLES],
    output:
        report(f"{RESULTS}/provenance.csv", caption="../report/provenance.rst", category="Provenance"),
    params:
        version=STAGE_VERSIONS["report"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/paper/provenance.log",
    benchmark:
        f"{RESULTS}/benchmarks/paper/provenance.tsv",
    localrule: True
    script:
        "../workflow_scripts/provenance_table.py"
