"""The experiment plan (rslib.experiment.plan) built from small configurations without Snakemake:
its grid, files, ensembles, artefact sources and cost jobs, and one ConfigError naming the key for
each inconsistency between the configuration's sections."""

from __future__ import annotations

import copy

import pytest
import yaml

from rslib.experiment.artefacts import ARTEFACTS, FIGURES, TABLES, artefact
from rslib.experiment.config import with_defaults
from rslib.experiment.paths import Paths
from rslib.experiment.plan import Plan, full_grid
from rslib.report import figures, tables
from rslib.runtime.errors import ConfigError
from workflow_helpers import REPO

SCHEMA = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())


def load(name: str) -> dict:
    return with_defaults(yaml.safe_load((REPO / name).read_text()), SCHEMA)


def plan_of(config: dict) -> Plan:
    return Plan.from_config(config, reference=load("config.yaml"), schema=SCHEMA)


def test_the_tiny_grid_its_files_and_shards():
    plan = plan_of(load("tests/configs/tiny.yaml"))
    assert plan.models == [{"dataset": "digits", "method": "gaussian", "sigma": "0.25", "seed": 0}]
    assert plan.trained == plan.models and plan.ensembles == [] and plan.evaluation_images == {"digits": 20}
    m = plan.models[0]
    assert plan.model_file(m) == "results/models/digits/gaussian/sigma0.25/seed0/model.pt"
    assert plan.certificate(m) == "results/certify/digits/gaussian/sigma0.25/seed0/certify.tsv"
    assert list(plan.shard_ids("digits")) == [0, 1, 2]
    assert plan.certify_inputs(m, 1) == {"model": "results/models/digits/gaussian/sigma0.25/seed0/model.pt"}
    assert plan.train_hparams(m)["epochs"] == 2
    assert plan.report_radii == [0.0, 0.25, 0.5]


def test_ensembles_stored_members_and_the_artefacts_sources():
    plan = plan_of(load("tests/configs/paper_tiny.yaml"))
    assert len(plan.ensembles) == 10 + 2 and plan.adaptive == [
        {"dataset": "digits", "sigma": "0.25", "ensemble": "advmacer:2"}]
    assert plan.stored_members == {("digits", "advmacer", "0.25", 0), ("digits", "advmacer", "0.25", 1),
                                   ("digits", "smoothadv", "0.25", 0), ("digits", "macer", "0.25", 0)}
    stored = {"dataset": "digits", "method": "macer", "sigma": "0.25", "seed": 0}
    assert plan.certify_inputs(stored, 1) == {"outputs": "results/outputs/digits/macer/sigma0.25/seed0/shards/1.npz"}
    assert plan.member_output_shards("digits", "0.25", "advmacer:1+macer:1") == [
        f"results/outputs/digits/{m}/sigma0.25/seed0/shards/{k}.npz" for m in ("advmacer", "macer") for k in (0, 1)]
    assert plan.scheme_settings("sween-adaptive") == {"sween": plan.config["ensembles"]["sween"]}
    # Table 1: the configured singles in the paper's row order; none of its ensembles is configured here
    assert [s.label for s in plan.artefact_sources("table1")] == ["SmoothAdv", "MACER", "AdvMacer"]
    sources = plan.artefact_sources("table3")
    assert [s.scheme for s in sources] == [None, "average", "mme", "optimal-paper", "optimal-predicted",
                                            "optimal-global"]
    inputs = plan.table_inputs("table3")
    assert inputs["members"] == [f"results/certify/digits/advmacer/sigma0.25/seed{k}/certify.tsv" for k in (0, 1)]
    assert inputs["seeds"] == ["results/certify/digits/advmacer/sigma0.25/seed1/certify.tsv"]  # AdvMacer's second seed
    params = plan.table_params("table3")
    assert params["seed_counts"] == [1, 0, 0, 0, 0, 0] and params["dataset"] == "digits"
    assert all(d.startswith("dataset digits (the paper: CIFAR-10)") for d in params["deviations"])
    assert plan.figure_inputs("figure1")["certificates"] == []  # drawn from the training curves alone


def test_the_papers_configuration_provides_every_row_the_registry_lists():
    """config.yaml builds what the paper's tables report: no row of the registry is missing from
    it (a row the configuration does not provide would silently leave its table)."""
    plan = plan_of(load("config.yaml"))
    for name in TABLES:
        a = artefact(name)
        dataset = plan.paper[a.dataset]
        expected = sum(len(a.singles) + len(a.ensembles) * len(a.schemes)
                       for _ in a.sigmas(plan.paper, plan.configured, dataset))
        assert len(plan.artefact_sources(name)) == expected, name
    # Figure 3 grows the ensembles as far as the configured seeds go: AdvMacer ×2..5, +SmoothAdv ×1..4
    assert len(plan.artefact_sources("figure3")) == 1 + 4 + 4


def test_the_full_grid_of_the_paper():
    """58 trainings (every slot with hparams) and one certification pass per slot."""
    train, certify = full_grid(load("config.yaml"))
    assert len(train) == 58 and len(certify) == 58
    assert {j["dataset"] for j in train} == {"cifar10", "svhn", "imagenet"}
    job = next(j for j in train if (j["method"], j["dataset"], j["sigma"]) == ("macer", "cifar10", 1.0))
    assert job["hparams"]["lbd_zero_until_first_decay"] is True and job["heldout"] == 2000
    # released checkpoints price the training they save; slots without hparams cost nothing
    plan = plan_of(load("presets/cifar10-published.yaml"))
    assert len(plan.imported_cost_jobs()) == 10 and plan.imported_unpriced() == []


def test_every_artefact_has_a_builder_and_a_target():
    assert set(TABLES) | set(FIGURES) | {"comparison"} == set(ARTEFACTS)
    assert {artefact(t).layout for t in TABLES} <= set(tables.BUILDERS)
    assert {artefact(f).layout for f in FIGURES} <= set(figures.BUILDERS)
    paths = Paths("data", "results")
    assert [paths.result(f"{a.name}.{a.suffix}") for a in ARTEFACTS.values()][-3:] == [
        "results/figure1.pdf", "results/figure3.pdf", "results/comparison.md"]


def test_wildcard_constraints_are_the_configured_values():
    constraints = plan_of(load("tests/configs/paper_tiny.yaml")).wildcard_constraints()
    assert constraints["dataset"] == "digits" and constraints["sigma"] == r"0\.25"
    assert constraints["method"] == "advmacer|macer|smoothadv"
    assert constraints["fit"] == "optimal|sween"


def _released(**entry):
    """Fill the MACER slot of paper_tiny with a released entry."""
    return lambda c: c["methods"]["macer"]["digits"].update(released={"0.25": {"files": ["a"]} | entry})


#: inconsistent keys of a released-network entry (format, builder, mean/std, input_layer)
RELEASED_ENTRY_ERRORS = [
    (_released(format="state_dict"),
     'methods.macer.digits.released.0.25: format state_dict needs builder: "package.module:function", the function '
     "that returns the network its weights fit"),
    (_released(format="macer", builder="a.b:c"),
     "methods.macer.digits.released.0.25: builder applies to format state_dict only (format macer reads its "
     "architecture from the file)"),
    (_released(format="torchscript", builder="a.b:c"),
     "methods.macer.digits.released.0.25: builder applies to format state_dict only (a TorchScript archive holds "
     "its network)"),
    (_released(format="exported", builder="a.b:c"),
     "methods.macer.digits.released.0.25: builder applies to format state_dict only (a torch.export archive holds "
     "its network)"),
    (_released(format="cohen", mean=[0.5], std=[0.5]),
     "methods.macer.digits.released.0.25: mean/std apply to formats torchscript, exported and state_dict; format "
     "cohen takes input_layer (normalize, center, none)"),
    (_released(format="torchscript", mean=[0.5]),
     "methods.macer.digits.released.0.25: give both mean and std (the input normalisation (x - mean) / std)"),
    (_released(format="torchscript", mean=[0.5], std=[0.5], input_layer="none"),
     "methods.macer.digits.released.0.25: give input_layer or mean/std, not both"),
]


@pytest.mark.parametrize("change, message", [
    (lambda c: c["ensembles"]["build"][0].update(members=["advmacer:3"]),
     "ensembles.build[0], digits sigma 0.25: ensemble 'advmacer:3' needs 3 advmacer models but only seeds [0, 1] "
     "are trained"),
    (lambda c: c["datasets"]["digits"].update(heldout_images=0),
     "ensembles.build[0]: scheme optimal-global fits weights on held-out training images; "
     "set datasets.digits.heldout_images"),
    (lambda c: c["datasets"]["digits"].update(evaluation={"start": 0, "stride": 5, "count": 101}),
     "datasets.digits.evaluation: count 101 but digits's 500 test images give only 100 from start 0 with stride 5"),
    (lambda c: c["methods"]["macer"]["digits"].update(by_sigma={"0.50": {"lbd": 1.0}}),
     "methods.macer.digits.by_sigma: sigma 0.50 is not configured for this method"),
    (lambda c: c["methods"]["macer"]["digits"].update(published_logs={"1.00": "log"}),
     "methods.macer.digits.published_logs: sigma 1.00 is not in datasets.digits.sigmas"),
    (lambda c: c["methods"]["macer"]["digits"].pop("hparams"),
     "methods.macer.digits: hparams are missing, and sigma 0.25 has no released checkpoints to import"),
    (lambda c: c["methods"]["macer"]["digits"].update(released={"0.25": {"format": "macer", "files": ["a", "b"]}}),
     "methods.macer.digits.released.0.25: 2 files for 1 seed slots [0]; give one file per seed"),
    (lambda c: c["methods"]["macer"]["digits"].update(by_sigma={"0.25": {"lbd": "two"}}),
     "methods.macer.digits.by_sigma.0.25: lbd: 'two' is not of type 'number'"),
    (lambda c: c["methods"]["macer"]["digits"]["hparams"].update(gama=8.0),
     "methods.macer.digits.hparams: macer does not read hyper-parameter 'gama'; did you mean 'gamma'?"),
    *RELEASED_ENTRY_ERRORS,
])
def test_each_inconsistency_is_one_config_error_naming_the_key(change, message):
    config = copy.deepcopy(load("tests/configs/paper_tiny.yaml"))
    change(config)
    with pytest.raises(ConfigError) as info:
        plan_of(config)
    assert str(info.value) == message


def test_what_the_import_of_each_released_format_gets(tmp_path, monkeypatch):
    """The import rule's arch and input_layer params: the dataset's arch and the entry's input
    layer for the reference formats (the values of earlier versions, so existing imports are not
    rerun), the builder and {"mean", "std"} for the formats of other codebases."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").write_text("stand-in")
    slot = {"dataset": "digits", "method": "macer", "sigma": "0.25", "seed": 0}
    expected = [
        ({"format": "macer"}, "small_cnn", None),
        ({"format": "smoothadv", "input_layer": "center"}, "small_cnn", "center"),
        ({"format": "torchscript"}, None, None),
        ({"format": "torchscript", "input_layer": "normalize"}, None, "normalize"),
        ({"format": "exported", "mean": [0.5], "std": [0.25]}, None, {"mean": [0.5], "std": [0.25]}),
        ({"format": "state_dict", "builder": "pkg.nets:wide", "mean": [0.5], "std": [0.25]}, "pkg.nets:wide",
         {"mean": [0.5], "std": [0.25]}),
    ]
    for entry, arch, input_layer in expected:
        config = copy.deepcopy(load("tests/configs/paper_tiny.yaml"))
        _released(**entry)(config)
        released = plan_of(config).released_file(slot)
        assert (released["arch"], released["input_layer"], released["format"]) == (arch, input_layer, entry["format"])


def test_a_released_slot_is_imported_not_trained_and_missing_files_are_listed_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load("tests/configs/paper_tiny.yaml")
    config["methods"]["macer"]["digits"]["released"] = {"0.25": {"format": "macer", "files": ["released/macer.pth"]}}
    plan = plan_of(config)
    slot = {"dataset": "digits", "method": "macer", "sigma": "0.25", "seed": 0}
    assert plan.model_file(slot) == "results/imported/digits/macer/sigma0.25/seed0/model.pt"
    assert plan.trained == [m for m in plan.models if m["method"] != "macer"]
    with pytest.raises(ConfigError, match=r"^1 configured released file is missing .*\n  not in presets"):
        plan.released_file(slot)
    (tmp_path / "released").mkdir()
    (tmp_path / "released/macer.pth").write_text("stand-in")
    plan = plan_of(config)
    assert plan.released_file(slot)["format"] == "macer"
    with pytest.raises(ConfigError, match="is imported from the released checkpoint released/macer.pth "
                                          r"\(methods.macer.digits.released\), not trained"):
        plan.train_hparams(slot)


def test_the_papers_configuration_warns_of_nothing():
    assert plan_of(load("config.yaml")).warnings() == []


def test_a_certify_budget_below_the_tables_radii_warns_once_per_sigma():
    """certify.n = 1,000 caps radii at σ·Φ⁻¹(0.001^(1/1000)) = 2.463σ, below the 3.81σ the paper's
    n = 100,000 reaches, where the tables ask for more: at σ = 0.25 and 0.50 (their columns go to
    2.25), not at σ = 1.00 (2.463 > 2.25)."""
    config = load("config.yaml")
    config["certify"]["n"] = 1000
    warnings = plan_of(config).warnings()
    assert [w.split(":")[0] for w in warnings] == [f"{d} sigma {s}" for d in ("cifar10", "svhn", "imagenet")
                                                   for s in ("0.25", "0.50")]
    assert warnings[0] == (
        "cifar10 sigma 0.25: certify.n = 1000 with alpha = 0.001 certifies radii up to 0.6158 (sigma * "
        "Phi^-1(alpha^(1/n))), but its tables ask for radii up to 2.25: every column above 0.6158 reads 0, where the "
        "paper's n = 100000 reaches 0.9529; raise certify.n to certify larger radii")


def test_a_budget_that_can_never_certify_warns():
    """α^(1/n) < ½ for n ≤ 9 at α = 0.001: even n of n votes abstain (Cohen et al.'s bound)."""
    config = load("tests/configs/tiny.yaml")
    config["certify"].update(n=9, batch_size=100)
    config["training_curves"]["n"] = 5
    warnings = plan_of(config).warnings()
    assert warnings == [
        "certify.n = 9 with alpha = 0.001 can never certify: even 9 of 9 votes bound p_A below 1/2 "
        "(alpha^(1/n) = 0.464), so every image abstains; raise certify.n",
        "training_curves.n = 5 with alpha = 0.001 can never certify: even 5 of 5 votes bound p_A below 1/2 "
        "(alpha^(1/n) = 0.251), so every image abstains; raise training_curves.n"]
    config["certify"]["n"] = 10
    assert len(plan_of(config).warnings()) == 2  # 10 samples can certify, but only up to 0.025
