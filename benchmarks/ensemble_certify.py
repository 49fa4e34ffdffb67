"""Ensemble certification: reduction over stored member outputs vs direct evaluation of the members.

    python benchmarks/ensemble_certify.py                  # the demo's AdvMacer×3 at σ=0.25 (run `make demo` first)
    python benchmarks/ensemble_certify.py --results results --dataset cifar10 --device cuda --images 20

Measured in one run on the same trained members, images and noise (SPEC "Performance"):

* member outputs — running each member once on CERTIFY's noise and storing float16 logits (paid
  once per member and shared by every ensemble, scheme and size);
* stored — one ensemble certification as a reduction over those outputs (``rule certify_ensemble``);
* direct — the same certification with ``Smooth(EnsembleClassifier(...))``, re-running every member.

Prints seconds per image and the ratio direct / stored. Timings are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from rslib.data.load import load_split
from rslib.data.registry import evaluation_indices
from rslib.ensembles.certify import certify_scheme_direct, certify_scheme_from_outputs
from rslib.ensembles.outputs import compute_member_outputs, compute_pseudo_outputs
from rslib.ensembles.schemes import ensemble_members, get_scheme, member_key
from rslib.models.checkpoint import load_model

SETTINGS = {"optimal": {"m": 10, "n": 10, "t": 0.3, "sigma_tilde": 0.01, "closed_form": "corrected"},
            "k_consensus": {"k": 2}, "sween": {"threshold": 0.99, "alpha": 0.05}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/demo")
    p.add_argument("--data", default="data")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--sigma", default="0.25")
    p.add_argument("--ensemble", default="advmacer:3")
    p.add_argument("--scheme", default="average")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--stride", type=int, default=1, help="evaluation stride (the demo and the paper: first images)")
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float32",
                   help="storage dtype of member logits (the workflow's default: float32)")
    args = p.parse_args()

    device = torch.device(args.device)
    sigma = float(args.sigma)
    seeds = {m: list(range(10)) for m in ("advmacer", "smoothadv", "macer", "gaussian", "consistency", "smoothmix")}
    members = ensemble_members(args.ensemble, seeds)
    models = [load_model(Path(args.results) / f"models/{args.dataset}/{m}/sigma{args.sigma}/seed{s}/model.pt",
                         sigma=sigma, device=device)[0] for m, s in members]
    keys = [member_key(m, s) for m, s in members]
    meta = Path(args.data) / args.dataset / "meta.json"
    test = load_split(meta, "test")
    indices = evaluation_indices(json.loads(meta.read_text())["n_test"], 0, args.stride, args.images)
    scheme = get_scheme(args.scheme)
    print(f"{args.ensemble} ({scheme.label}) on {len(indices)} {args.dataset} images, n0={args.n0}, n={args.n}, {device}")

    t0 = time.perf_counter()
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.dtype]
    outputs = [compute_member_outputs(m, test, indices, args.n0, args.n, args.batch_size, 0, sigma, device, dtype)
               for m in models]
    if scheme.per_point:  # the workflow's pseudo_outputs rule
        for out, m, k in zip(outputs, models, keys):
            out["perturbation"] = compute_pseudo_outputs(m, test, indices, 0, sigma, dict(SETTINGS["optimal"], member_key=k),
                                                         args.batch_size, device)["perturbation"]
    t_outputs = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        certify_scheme_from_outputs(outputs, scheme, SETTINGS, 0.001, sigma, Path(tmp) / "stored.tsv")
        t_stored = time.perf_counter() - t0
        t0 = time.perf_counter()
        certify_scheme_direct(models, keys, test, indices, scheme, SETTINGS, num_classes=test.num_classes, sigma=sigma,
                              n0=args.n0, n=args.n, alpha=0.001, batch_size=args.batch_size, noise_seed=0,
                              out_tsv=Path(tmp) / "direct.tsv", device=device, log=lambda m: None)
        t_direct = time.perf_counter() - t0
        rows = [[line.split("\t")[:5] for line in (Path(tmp) / f"{name}.tsv").read_text().splitlines()[1:]]
                for name in ("stored", "direct")]
        differ = sum(a != b for a, b in zip(*rows))
    per = len(indices)
    print(f"member outputs (once, {len(models)} members): {t_outputs:8.2f}s  ({t_outputs / per * 1e3:.1f} ms/image)")
    print(f"stored-output certification:        {t_stored:8.2f}s  ({t_stored / per * 1e3:.2f} ms/image)")
    print(f"direct certification:               {t_direct:8.2f}s  ({t_direct / per * 1e3:.1f} ms/image)")
    print(f"ratio direct / stored:              {t_direct / t_stored:8.1f}x")
    print(f"images whose certificate differs ({args.dtype} storage; float16 may flip near-ties): {differ}/{per}")


if __name__ == "__main__":
    main()
