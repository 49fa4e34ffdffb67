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

#: The paper's σ grid (``000`` Sec. 4); an artefact without a fixed σ reports each one configured.
PAPER_SIGMAS = ("0.25", "0.50", "1.00")

#: Table 1's EsbRS ensembles (average weights); Tables 5-7 add EsbRS-SmoothAdv×3.
TABLE1_ENSEMBLES = ("advmacer:3", "advmacer:1+smoothadv:2", "advmacer:2+macer:1", "advmacer:1+macer:2")
#: Tables 5-7's columns: 0.00-2.00 at σ = 0.25 and 0.50, 0.00-2.25 at σ = 1.00
RADII_TO_2 = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


@dataclass(frozen=True)
class Artefact:
    """One table or figure of ``000`` (or the comparison with it), as the workflow regenerates it:
    the target ``results/<name>.<suffix>``, the dataset it reports, its rows (single models, then
    ensembles × schemes, then, where ``user_rows``, the user's own methods, per σ) and the layout
    that draws it (:data:`rslib.report.tables.BUILDERS`, :data:`rslib.report.figures.BUILDERS`)."""

    name: str  #: the target's stem: results/table1.tex, results/figure1.pdf
    kind: str  #: "table", "figure" or "comparison"
    dataset: str  #: the key of the configuration's ``paper`` block that names its dataset
    paper_dataset: str  #: the dataset the paper used
    layout: str  #: how it is drawn (the builder's key)
    singles: tuple[str, ...] = ()  #: methods with a single-model row, in row order
    ensembles: tuple[str, ...] = ()  #: ensembles (config names: advmacer:1+smoothadv:2), after the singles
    schemes: tuple[str, ...] = ("average",)  #: the schemes each ensemble is reported with
    sigma: str | None = None  #: one fixed σ ...
    sigma_key: str | None = None  #: ... or the ``paper`` key that names it; neither: every paper σ
    radii: tuple[float, ...] = ()  #: certified-accuracy columns
    #: also lists the single models of the user's own methods (not in the paper), after the paper's rows at each σ
    user_rows: bool = False

    @property
    def suffix(self) -> str:
        return {"table": "tex", "figure": "pdf", "comparison": "md"}[self.kind]

    def sigmas(self, paper: Mapping[str, Any], configured: Configured, dataset: str) -> list[str]:
        if self.sigma is not None:
            return [self.sigma]
        if self.sigma_key is not None:
            return [paper[self.sigma_key]]
        return [s for s in PAPER_SIGMAS if s in configured.sigmas.get(dataset, [])]

    def sources(self, paper: Mapping[str, Any], configured: Configured) -> list[Source]:
        """Every source this artefact reports that the configuration provides, in table order."""
        dataset = paper[self.dataset]
        if dataset is None or self.kind == "comparison":
            return []
        wanted = []
        for sigma in self.sigmas(paper, configured, dataset):
            wanted += [Source(dataset, sigma, m) for m in self.singles]
            wanted += [Source(dataset, sigma, e, scheme) for e in self.ensembles for scheme in self.schemes]
            if self.user_rows:
                wanted += [Source(dataset, sigma, m, user_label=label) for m, label in configured.user_labels.items()]
        return [replace(w, origin=configured.origin(w)) for w in wanted if configured.has(w)]


def _table(name: str, layout: str, **rows: Any) -> Artefact:
    paper = {"table4": ("imagenet", "ImageNet"), "table8": ("svhn", "SVHN")}.get(name, ("main", "CIFAR-10"))
    return Artefact(name, "table", *paper, layout, **rows)


#: The paper's artefacts in its order: rule ``all``, the wildcard constraints, the table and figure
#: builders and the comparison read them from here.
ARTEFACTS: dict[str, Artefact] = {a.name: a for a in (
    _table("table1", "acr_by_sigma", singles=("smoothadv", "macer", "smoothmix", "consistency", "advmacer"),
           ensembles=TABLE1_ENSEMBLES, user_rows=True),
    _table("table2", "training_cost", singles=("smoothadv", "advmacer", "macer"), user_rows=True),
    _table("table3", "ensemble_weights", singles=("advmacer",), ensembles=("advmacer:2",), sigma_key="table3_sigma",
           schemes=("average", "mme", "optimal-paper", "optimal-predicted", "optimal-global")),
    _table("table4", "acr_by_sigma_with_time", singles=("smoothadv", "macer", "advmacer"), user_rows=True),
    *(_table(name, "certified_accuracy", singles=("smoothadv", "macer", "smoothmix", "advmacer"),
             ensembles=("smoothadv:3",) + TABLE1_ENSEMBLES, sigma=sigma, radii=radii, user_rows=True)
      for name, sigma, radii in (("table5", "0.25", RADII_TO_2), ("table6", "0.50", RADII_TO_2),
                                 ("table7", "1.00", RADII_TO_2 + (2.25,)))),
    _table("table8", "svhn", singles=("smoothadv", "macer", "advmacer"),
           ensembles=("smoothadv:3", "advmacer:3", "advmacer:1+macer:2", "advmacer:2+macer:1",
                      "advmacer:1+smoothadv:2", "advmacer:2+smoothadv:1"), user_rows=True),
    Artefact("figure1", "figure", "main", "CIFAR-10", "training_curves", singles=("advmacer", "macer"),
             sigma_key="figure1_sigma", user_rows=True),
    Artefact("figure3", "figure", "main", "CIFAR-10", "ensemble_sizes", singles=("advmacer",),
             ensembles=tuple(f"advmacer:{k}" for k in range(2, 10))
             + tuple(f"advmacer:1+smoothadv:{k}" for k in range(1, 9)), sigma_key="figure3_sigma"),
    Artefact("comparison", "comparison", "main", "CIFAR-10", "comparison"),
)}
TABLES = tuple(a.name for a in ARTEFACTS.values() if a.kind == "table")
FIGURES = tuple(a.name for a in ARTEFACTS.values() if a.kind == "figure")
#: Every radius a table reports (the statistics computed per certificate)
TABLE_RADII = tuple(sorted({r for a in ARTEFACTS.values() for r in a.radii}))


def artefact(name: str) -> Artefact:
    try:
        return ARTEFACTS[name]
    except KeyError:
        raise ValueError(f"unknown artefact {name!r}; known: {', '.join(ARTEFACTS)}") from None


@dataclass(frozen=True)
class Source:
    """One certified classifier: a single model (``scheme`` None, ``name`` = method, its first
    configured seed) or an ensemble ``name`` certified with ``scheme``. A single model of a method
    of the user's own carries its table label (``user_label``); it is not in the paper."""

    dataset: str
    sigma: str
    name: str
    scheme: str | None = None
    seed: int | None = None  # a single model other than the method's first seed (ensemble members)
    #: where a single model's certificate comes from (see ORIGINS); ensembles are always certified here
    origin: str = "trained"
    #: the label of a method of the user's own (config ``methods.<name>.label`` or its class's); None: the paper's
    user_label: str | None = None

    @property
    def single(self) -> bool:
        return self.scheme is None

    @property
    def in_paper(self) -> bool:
        """Whether the paper has this row's method (else a method of the user's own)."""
        return self.user_label is None

    @property
    def label(self) -> str:
        if self.user_label is not None:
            return self.user_label
        return METHOD_NAMES.get(self.name, self.name) if self.single else ensemble_label(self.name)

    @property
    def paper_mark(self) -> str:
        """:data:`NOT_IN_PAPER_MARK` for a method of the user's own, else nothing."""
        return "" if self.in_paper else NOT_IN_PAPER_MARK

    @property
    def marked_label(self) -> str:
        """The label with the marks of a method not in the paper and of its origin, as the tables show it."""
        return self.label + self.paper_mark + ORIGIN_MARKS[self.origin]

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


#: The mark, caption note and comparison reason of a single-model row of a method of the user's own
#: (``methods.<name>.module``): listed after the paper's rows, compared with nothing.
NOT_IN_PAPER_MARK = " ¶"
NOT_IN_PAPER_NOTE = "¶ a method of this run's own (methods.<name>.module), not in the paper"
NOT_IN_PAPER = "not in the paper"


def source_params(src: Source) -> dict[str, Any]:
    """A source as it travels in a rule's params (``Source(**params)`` rebuilds it): its fields,
    without ``user_label`` for the paper's methods, so that their jobs' params (which Snakemake
    reruns a job for when they change) stay as they were before methods of one's own existed."""
    params = vars(src).copy()
    if params["user_label"] is None:
        del params["user_label"]
    return params


@dataclass
class Configured:
    """What a configuration trains and certifies: first seed per (dataset, σ, method), the
    certified (dataset, σ, ensemble, scheme)s, and each dataset's σ."""

    first_seed: dict[tuple[str, str, str], int] = field(default_factory=dict)
    ensembles: set[tuple[str, str, str, str]] = field(default_factory=set)
    sigmas: dict[str, list[str]] = field(default_factory=dict)
    #: origin (ORIGINS) of each (dataset, σ, method)'s single-model row; absent = "trained"
    origins: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: the table label of each method of the user's own, in configuration order
    user_labels: dict[str, str] = field(default_factory=dict)

    def has(self, s: Source) -> bool:
        if s.single:
            return (s.dataset, s.sigma, s.name) in self.first_seed or (s.dataset, s.sigma, s.name) in self.origins
        return (s.dataset, s.sigma, s.name, s.scheme) in self.ensembles

    def origin(self, s: Source) -> str:
        return self.origins.get((s.dataset, s.sigma, s.name), "trained") if s.single else "trained"


def artefact_dataset(name: str, paper: Mapping[str, Any]) -> str | None:
    """Which configured dataset an artefact reports (config ``paper``; None = skipped)."""
    return paper[artefact(name).dataset]


def table_sources(name: str, paper: Mapping[str, Any], configured: Configured) -> list[Source]:
    """Every source an artefact reports that the configuration provides, in table order."""
    return artefact(name).sources(paper, configured)


def member_sources(source: Source, seeds: Mapping[str, Sequence[int]]) -> list[Source]:
    """The single-model sources of an ensemble's members (``seeds``: each method's trained seeds
    in configured order), for certification times."""
    from rslib.ensembles.schemes import ensemble_members

    return [Source(source.dataset, source.sigma, m, None, int(k)) for m, k in ensemble_members(source.name, seeds)]
