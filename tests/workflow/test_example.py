"""The worked example of docs/example.md (examples/your_model_your_method/), run as the page says:
its four commands, each checked to be on the page verbatim, in a scratch working directory that
sees the repository's examples/ folder where the page's paths expect it. A TorchScript model of an
architecture rslib does not define, certified from the command line exactly as Smooth.certify
certifies it and as the workflow certifies the slot it fills; MACER, a method of one's own
(stability training) and that model in Table 1, marked, with the statistics of their certificates.

Only the environment differs from a reader's shell: rslib comes from this checkout
(``PYTHONPATH``, after the page's own entry), Snakemake runs this checkout's Snakefile (``-s``),
and ``OMP_NUM_THREADS=1`` (the tests' one torch thread, tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rslib.certification.smooth import Smooth
from rslib.certification.tsv import HEADER, read_certificates
from rslib.data.load import load_split
from rslib.models.checkpoint import torchscript_deprecation_silenced
from rslib.report.metrics import bootstrap_intervals, summarize
from rslib.runtime.io import file_digest
from workflow_helpers import REPO, SNAKEMAKE, job_counts

PAGE = REPO / "docs/example.md"
EXAMPLE = "examples/your_model_your_method"
MODEL = "results/example/my_model/noise_0.25/separable_cnn.ts"
CLI_TSV = "results/example/cli/separable_cnn.tsv"
RESULTS = "results/example"
#: the page's commands, in its order (the page is run from the repository's root)
COMMANDS = {
    "model": f"python {EXAMPLE}/separable_cnn.py",
    "certify": f"python -m rslib certify digits {MODEL} 0.25 {CLI_TSV} --count 20 --n 500 --device cpu",
    "analyze": f"python -m rslib analyze {CLI_TSV} --radii 0 0.25 0.5",
    "workflow": f"PYTHONPATH={EXAMPLE} snakemake --cores 2 --configfile {EXAMPLE}/config.yaml",
}
#: the certification settings of the page's certify command and of the example's config.yaml
SIGMA, COUNT, N0, N, ALPHA = 0.25, 20, 100, 500, 0.001


def run_command(command: str, workdir: Path) -> subprocess.CompletedProcess:
    """One of the page's command lines, run in ``workdir``: leading ``NAME=value`` assignments go
    into the environment; ``python`` is this interpreter, ``snakemake`` this checkout's workflow."""
    words = shlex.split(command)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assigned = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        assigned[name] = value
    env.update(assigned)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (assigned.get("PYTHONPATH"), str(REPO),
                                                    os.environ.get("PYTHONPATH")) if p)
    program = {"python": [sys.executable], "snakemake": [SNAKEMAKE, "-s", str(REPO / "Snakefile")]}[words[0]]
    return subprocess.run(program + words[1:], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """The page's commands, in order, in a scratch directory holding a link to examples/."""
    workdir = tmp_path_factory.mktemp("example")
    (workdir / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    results = {}
    for step, command in COMMANDS.items():
        results[step] = run_command(command, workdir)
        assert results[step].returncode == 0, f"{command}\n{results[step].stderr[-5000:]}"
    return workdir, results


def test_the_commands_are_the_pages():
    page = PAGE.read_text()
    for command in COMMANDS.values():
        assert command in page, command
    positions = [page.index(command) for command in COMMANDS.values()]
    assert positions == sorted(positions), "the page gives the commands in another order"
    for name in ("separable_cnn.py", "stability_training.py", "config.yaml"):
        assert (REPO / EXAMPLE / name).is_file() and f"{EXAMPLE}/{name}" in page


def certificate_fields(path: Path) -> list[list[str]]:
    """idx label predict radius correct of every row, as written (the time varies)."""
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    return [line.split("\t")[:5] for line in lines[1:]]


def test_the_cli_certifies_the_torchscript_model_as_smooth_does_and_analyze_summarises_it(example):
    """`rslib certify` on the TorchScript file equals Smooth.certify on the archive with noise seed
    0, row for row; `rslib analyze` prints summarize's values with bootstrap_intervals' interval."""
    workdir, results = example
    test_set = load_split(workdir / "data/digits/meta.json", "test")
    with torchscript_deprecation_silenced():
        network = torch.jit.load(str(workdir / MODEL))
    smooth = Smooth(network, 10, SIGMA, noise_seed=0, device="cpu")
    expected = []
    for i in range(COUNT):
        x, label = test_set[i]
        prediction, radius = smooth.certify(x, N0, N, ALPHA, N, index=i)
        expected.append([str(i), str(label), str(prediction), repr(radius), str(int(prediction == label))])
    assert certificate_fields(workdir / CLI_TSV) == expected
    assert sum(row[4] == "1" for row in expected) >= COUNT // 2  # a trained model: mostly certified correct

    radii = [0.0, 0.25, 0.5]
    certificates = read_certificates(workdir / CLI_TSV)
    values, intervals = summarize(certificates, radii), bootstrap_intervals([certificates], radii)
    printed = {}
    for line in results["analyze"].stdout.splitlines()[2:]:
        label, value, low, high = re.fullmatch(r"\s+(.+?)\s{2,}(\S+)\s+\[(\S+), (\S+)\]", line).groups()
        printed[label] = (value, low, high)
    labels = {"acr": "ACR", "accuracy": "clean accuracy", **{f"r={r:g}": f"certified at r={r:g}" for r in radii}}
    assert set(printed) == set(labels.values())
    for key, label in labels.items():
        cell = (lambda v: f"{v:.3f}") if key == "acr" else (lambda v: f"{100 * v:.1f}%")
        assert printed[label] == (cell(values[key]), cell(intervals[key][0]), cell(intervals[key][1])), key
    assert results["analyze"].stdout.startswith(f"{CLI_TSV}: {COUNT} images\n")


def test_table1_lists_macer_the_own_method_and_the_imported_model_with_their_certificates(example):
    """Table 1: MACER (trained), Consistency ‡ (the TorchScript model, imported) and Stability ¶
    (the method of one's own, after the paper's rows); each cell is summarize / bootstrap_intervals
    of that row's certificate, and the imported slot's certificate is the command line's, row for row."""
    workdir, results = example
    counts = job_counts(results["workflow"])
    assert counts["train"] == 2 and counts["import_model"] == 1 and counts["certify"] == 3
    results_dir = workdir / RESULTS
    certify = {m: results_dir / f"certify/digits/{m}/sigma0.25/seed0/certify.tsv"
               for m in ("macer", "consistency", "stability")}
    assert certificate_fields(certify["consistency"]) == certificate_fields(workdir / CLI_TSV)
    imported = json.loads(certify["consistency"].with_suffix(".json").read_text())["model"]["imported"]
    assert imported["format"] == "torchscript" and imported["sha256"] == file_digest(workdir / MODEL, "sha256")
    assert imported["input_layer"] == "none" and imported["plausibility"]["passed"]

    table = pd.read_csv(results_dir / "table1.csv", float_precision="round_trip")
    rows = {"MACER": ("macer", "trained"), "Consistency": ("consistency", "imported"),
            "Stability": ("stability", "trained")}
    assert list(dict.fromkeys(table["row"])) == list(rows)
    for row, (method, origin) in rows.items():
        cells = table[table["row"] == row].set_index("metric")
        certificates = read_certificates(certify[method])
        values, intervals = summarize(certificates, []), bootstrap_intervals([certificates], [])
        assert set(cells["origin"]) == {origin}, row
        assert set(cells.index) == {"acr", "accuracy"}, row
        for metric in cells.index:
            assert cells.loc[metric, "value"] == values[metric], (row, metric)
            assert (cells.loc[metric, "low"], cells.loc[metric, "high"]) == intervals[metric], (row, metric)
    assert set(table[table["row"] == "Stability"]["deviation"]) == {"not in the paper"}
    tex = (results_dir / "table1.tex").read_text()
    assert "\nMACER & " in tex and "\nConsistency $^\\ddagger$ & " in tex and "\nStability \\P{} & " in tex

    summary = pd.read_csv(results_dir / "certified_accuracy.csv", float_precision="round_trip").set_index("method")
    for method, path in certify.items():
        expected = summarize(read_certificates(path), [0.0, 0.25, 0.5])
        assert {k: summary.loc[method, k] for k in expected} == expected, method
    assert (results_dir / "curves/digits_sigma0.25.pdf").stat().st_size > 0
    comparison = (results_dir / "comparison.md").read_text()
    compared, _, own = comparison.partition("## Rows not in the paper")
    assert "| table1 | 0.25 | Consistency | acr |" in compared and "| imported |" in compared
    assert "| table1 | 0.25 | Stability | acr |" in own and "Stability" not in compared


def test_the_example_method_is_stability_training():
    """StabilityTraining's loss is CE(f(x), y) + λ·(KL(p(x) ‖ p(x + δ)) + H(p(x))) on the noise
    torch.randn_like draws (the reimplementation's cross-entropy written as KL plus entropy), and
    a negative weight is refused before any step."""
    import importlib.util

    from rslib.runtime.errors import ConfigError

    spec = importlib.util.spec_from_file_location("stability_training", REPO / EXAMPLE / "stability_training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    method = module.StabilityTraining(0.5, {"epochs": 1, "stability_weight": 3.0})
    assert method.hparam_keys == ("stability_weight",) and method.label == "Stability"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    torch.manual_seed(1)
    loss, logits = method.loss(model, x, y, epoch=0)
    torch.manual_seed(1)
    noisy = model(x + 0.5 * torch.randn_like(x))
    p, log_p, log_q = model(x).softmax(1), model(x).log_softmax(1), noisy.log_softmax(1)
    expected = torch.nn.functional.cross_entropy(model(x), y) + 3.0 * ((p * (log_p - log_q)).sum(1).mean()
                                                                       - (p * log_p).sum(1).mean())
    assert torch.allclose(loss, expected, rtol=1e-6) and torch.equal(logits, noisy)
    with pytest.raises(ConfigError, match="stability_weight must be >= 0"):
        module.StabilityTraining(0.5, {"stability_weight": -1.0})
