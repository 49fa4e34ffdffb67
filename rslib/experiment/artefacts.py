"""The paper's artefacts (``000`` Tables 1–8, Figures 1 and 3) and the sources each reports.

Each artefact is described by its *sources* (:class:`Source`: a single model or an ensemble with
a scheme, at a dataset and σ); :func:`table_sources` lists those an artefact needs from what the
configuration trains and certifies, so that ``snakemake results/table1.tex`` builds exactly those.
No torch here: the workflow imports this module while it builds the DAG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from rslib.ensembles.schemes import METHOD_NAMES, ensemble_label


#: The paper's σ grid; Tables 5, 6, 7 are σ = 0.25, 0.50, 1.00 of the main dataset.
PAPER_SIGMAS = ("0.25", "0.50", "1.00")


SWEEP_SIGMA_TABLES = {"table5": "0.25", "table6": "0.50", "table7": "1.00"}


#: Table 5–7 radii, the paper's columns: 0.00–2.00 at σ = 0.25 and 0.50, 0.00–2.25 at σ = 1.00
SWEEP_RADII = {
    "table5": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
    "table6": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
    "table7": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25),
}


#: Every radius a table reports (the statistics computed per certificate)
TABLE_RADII = tuple(sorted({r for radii in SWEEP_RADII.values() for r in radii}))


BASELINES = ("smoothadv", "macer", "smoothmix", "consistency", "advmacer")  # Table 1 / 5-7 single rows


TABLE1_ENSEMBLES = ("advmacer:3", "advmacer:1+smoothadv:2", "advmacer:2+macer:1", "advmacer:1+macer:2")


SWEEP_SINGLES = ("smoothadv", "macer", "smoothmix", "advmacer")  # Tables 5-7 have no Consistency row


SWEEP_ENSEMBLES = ("smoothadv:3",) + TABLE1_ENSEMBLES


TABLE3_SCHEMES = ("average", "mme", "optimal-paper", "optimal-predicted", "optimal-global")


TABLE8_SINGLES = ("smoothadv", "macer", "advmacer")


TABLE8_ENSEMBLES = ("smoothadv:3", "advmacer:3", "advmacer:1+macer:2", "advmacer:2+macer:1",
                    "advmacer:1+smoothadv:2", "advmacer:2+smoothadv:1")


ARTEFACTS = tuple(f"table{k}" for k in range(1, 9)) + ("figure1", "figure3")


PAPER_DATASETS = {"table4": "ImageNet", "table8": "SVHN"}  # every other artefact is CIFAR-10


@dataclass(frozen=True)
class Source:
    """One certified classifier: a single model (``scheme`` None, ``name`` = method, its first
    configured seed) or an ensemble ``name`` certified with ``scheme``."""

    dataset: str
    sigma: str
    name: str
    scheme: str | None = None
    seed: int | None = None  # a single model other than the method's first seed (ensemble members)
    #: where a single model's certificate comes from (see ORIGINS); ensembles are always certified here
    origin: str = "trained"

    @property
    def single(self) -> bool:
        return self.scheme is None

    @property
    def label(self) -> str:
        return METHOD_NAMES.get(self.name, self.name) if self.single else ensemble_label(self.name)

    @property
    def marked_label(self) -> str:
        """The label with the mark of its origin, as the tables show it."""
        return self.label + ORIGIN_MARKS[self.origin]

    @property
    def has_curve(self) -> bool:
        """A training curve (and a measured training time) exists: the workflow trained it."""
        return self.single and self.origin == "trained"


#: Where a single-model row comes from: trained by this workflow; a released checkpoint
#: (``000`` Sec. 4 took SmoothAdv's published models) imported and certified by this workflow;
#: or a published certification log read as it is.
ORIGINS = ("trained", "imported", "published log")


ORIGIN_MARKS = {"trained": "", "imported": " ‡", "published log": " §"}


ORIGIN_NOTE = {"imported": "‡ released checkpoint, certified by this workflow",
               "published log": "§ published certification log, not recomputed"}


@dataclass
class Configured:
    """What a configuration trains and certifies: first seed per (dataset, σ, method), the
    certified (dataset, σ, ensemble, scheme)s, and each dataset's σ."""

    first_seed: dict[tuple[str, str, str], int] = field(default_factory=dict)
    ensembles: set[tuple[str, str, str, str]] = field(default_factory=set)
    sigmas: dict[str, list[str]] = field(default_factory=dict)
    #: origin (ORIGINS) of each (dataset, σ, method)'s single-model row; absent = "trained"
    origins: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def has(self, s: Source) -> bool:
        if s.single:
            return (s.dataset, s.sigma, s.name) in self.first_seed or (s.dataset, s.sigma, s.name) in self.origins
        return (s.dataset, s.sigma, s.name, s.scheme) in self.ensembles

    def origin(self, s: Source) -> str:
        return self.origins.get((s.dataset, s.sigma, s.name), "trained") if s.single else "trained"


def _sigmas(configured: Configured, dataset: str | None, wanted: Sequence[str] = PAPER_SIGMAS) -> list[str]:
    have = configured.sigmas.get(dataset, []) if dataset else []
    return [s for s in wanted if s in have] or ([] if wanted is PAPER_SIGMAS else [])


def artefact_dataset(artefact: str, paper: Mapping[str, Any]) -> str | None:
    """Which configured dataset an artefact reports (config ``paper``; None = skipped)."""
    return paper["imagenet"] if artefact == "table4" else paper["svhn"] if artefact == "table8" else paper["main"]


def table_sources(artefact: str, paper: Mapping[str, Any], configured: Configured) -> list[Source]:
    """Every source an artefact reports that the configuration provides, in table order."""
    d = artefact_dataset(artefact, paper)
    if d is None:
        return []
    wanted: list[Source] = []
    if artefact == "table1":
        for s in _sigmas(configured, d):
            wanted += [Source(d, s, m) for m in BASELINES] + [Source(d, s, e, "average") for e in TABLE1_ENSEMBLES]
    elif artefact == "table2":
        for s in _sigmas(configured, d):
            wanted += [Source(d, s, m) for m in ("smoothadv", "advmacer", "macer")]
    elif artefact == "table3":
        s = paper["table3_sigma"]
        wanted = [Source(d, s, "advmacer")] + [Source(d, s, "advmacer:2", scheme) for scheme in TABLE3_SCHEMES]
    elif artefact == "table4":
        for s in _sigmas(configured, d):
            wanted += [Source(d, s, m) for m in ("smoothadv", "macer", "advmacer")]
    elif artefact in SWEEP_SIGMA_TABLES:
        s = SWEEP_SIGMA_TABLES[artefact]
        wanted = [Source(d, s, m) for m in SWEEP_SINGLES] + [Source(d, s, e, "average") for e in SWEEP_ENSEMBLES]
    elif artefact == "table8":
        for s in _sigmas(configured, d):
            wanted += [Source(d, s, m) for m in TABLE8_SINGLES] + [Source(d, s, e, "average") for e in TABLE8_ENSEMBLES]
    elif artefact == "figure1":
        s = paper["figure1_sigma"]
        wanted = [Source(d, s, m) for m in ("advmacer", "macer")]
    elif artefact == "figure3":
        s = paper["figure3_sigma"]
        wanted = [Source(d, s, "advmacer")]
        wanted += [Source(d, s, f"advmacer:{k}", "average") for k in range(2, 10)]
        wanted += [Source(d, s, f"advmacer:1+smoothadv:{k}", "average") for k in range(1, 9)]
    else:
        raise ValueError(f"unknown artefact {artefact!r}; known: {', '.join(ARTEFACTS)}")
    return [replace(w, origin=configured.origin(w)) for w in wanted if configured.has(w)]


def member_sources(source: Source, seeds: Mapping[str, Sequence[int]]) -> list[Source]:
    """The single-model sources of an ensemble's members (``seeds``: each method's trained seeds
    in configured order), for certification times."""
    from rslib.ensembles.schemes import ensemble_members

    return [Source(source.dataset, source.sigma, m, None, int(k)) for m, k in ensemble_members(source.name, seeds)]
