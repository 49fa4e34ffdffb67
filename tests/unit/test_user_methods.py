"""The training-method interface (rslib.training.base.TrainingMethod) and methods of the user's own
(``methods.<name>.module``): the paper's six declare the keys they read in one torch-free table,
a user's class is found, validated like them, and its rows join the single-model tables after the
paper's, marked, and the comparison as not comparable."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO

from rslib.experiment.artefacts import NOT_IN_PAPER, Source, source_params
from rslib.experiment.config import with_defaults
from rslib.experiment.plan import Plan
from rslib.runtime.errors import ConfigError

SCHEMA = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
USER_METHOD = (REPO / "tests/workflow/user_method.py").read_text()

#: METHOD_KEYS before the interface declared keys on the classes (issue 21): the declaration must not drift.
PAPER_METHOD_KEYS = {
    "gaussian": (),
    "smoothadv": ("num_noise_vec", "attack_steps", "epsilon", "warmup_epochs"),
    "macer": ("num_noise_vec", "gamma", "beta", "lbd", "lbd_zero_until_first_decay"),
    "advmacer": ("num_noise_vec", "attack_steps", "epsilon", "warmup_epochs", "gamma", "beta", "lbd",
                 "lbd_zero_until_first_decay"),
    "consistency": ("num_noise_vec", "lbd", "eta"),
    "smoothmix": ("num_noise_vec", "num_steps", "eta", "alpha", "mix_step", "warmup", "maxnorm", "maxnorm_s"),
}


def test_every_paper_method_declares_its_keys_in_the_torch_free_table():
    from rslib.training.driver import METHODS
    from rslib.training.hparams import METHOD_KEYS

    assert METHOD_KEYS == PAPER_METHOD_KEYS
    assert {name: cls.hparam_keys for name, cls in METHODS.items()} == METHOD_KEYS
    assert all(cls.name == name for name, cls in METHODS.items())


def test_a_method_reads_only_the_keys_it_declares():
    from rslib.training.base import TrainingMethod

    class Declared(TrainingMethod):
        name = "declared"
        hparam_keys = ("a",)

    method = Declared(0.25, {"epochs": 2, "a": 1})
    assert method.hparams["a"] == 1 and method.hparams.get("epochs") == 2 and "lr" not in method.hparams
    with pytest.raises(ConfigError, match="training method 'declared' reads hyper-parameter 'b', which it does not "
                                          "declare: add it to the class's hparam_keys"):
        method.hparams.get("b", 0)  # not a silent default
    with pytest.raises(TypeError):
        method.hparams["a"] = 2  # read-only


@pytest.mark.parametrize("config", ["config.yaml", "demo/config.yaml"])
def test_building_the_plan_of_the_papers_methods_imports_no_torch(config):
    code = textwrap.dedent(f"""
        import sys, yaml
        from rslib.experiment.config import with_defaults
        from rslib.experiment.plan import Plan
        schema = yaml.safe_load(open("schemas/config.schema.yaml"))
        plan = Plan.from_config(with_defaults(yaml.safe_load(open({config!r})), schema), schema=schema)
        assert plan.models
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture
def isolated_path(monkeypatch):
    """sys.path restored afterwards (the loader appends the working directory to it)."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def write(directory, name: str, text: str):
    (directory / f"{name}.py").write_text(textwrap.dedent(text))


def test_a_users_class_is_found_by_module_or_by_name(tmp_path, monkeypatch, isolated_path):
    from rslib.training.driver import get_method
    from rslib.training.gaussian import Gaussian
    from rslib.training.user_methods import load_method_class

    write(tmp_path, "um_one", """
        from rslib.training.base import TrainingMethod
        from rslib.training.gaussian import Gaussian  # imported, not defined here: not a candidate
        class One(TrainingMethod):
            hparam_keys = ("k",)
    """)
    write(tmp_path, "um_two", """
        from rslib.training.base import TrainingMethod
        class A(TrainingMethod): pass
        class B(TrainingMethod): pass
        class NotAMethod: pass
    """)
    monkeypatch.chdir(tmp_path)  # found in the working directory
    assert load_method_class("um_one", "w").__name__ == "One"
    assert get_method("mine", "um_two:B").__name__ == "B"
    assert load_method_class("rslib.training.gaussian:Gaussian", "w") is Gaussian  # any importable module
    with pytest.raises(ConfigError, match=r"^w: module 'um_two' defines 2 TrainingMethod subclasses \(A, B\); "
                                          r"name one: 'um_two:A'$"):
        load_method_class("um_two", "w")
    with pytest.raises(ConfigError, match="^w: module 'um_two' has no TrainingMethod subclass 'NotAMethod'"):
        load_method_class("um_two:NotAMethod", "w")
    with pytest.raises(ConfigError, match="^w: module 'um_two' has no class 'C'"):
        load_method_class("um_two:C", "w")


def test_a_users_module_that_cannot_be_used_is_one_line(tmp_path, monkeypatch, isolated_path):
    from rslib.training.user_methods import load_method_class

    elsewhere = tmp_path / "on_path"
    elsewhere.mkdir()
    write(elsewhere, "um_broken", "import um_dependency_not_installed\n")
    write(elsewhere, "um_keys", """
        from rslib.training.base import TrainingMethod
        class Keys(TrainingMethod):
            hparam_keys = "k"
    """)
    write(elsewhere, "um_empty", "x = 1\n")
    monkeypatch.syspath_prepend(str(elsewhere))  # found on the import path (PYTHONPATH)
    monkeypatch.chdir(tmp_path)
    cases = {
        "um_absent": f"m.module: no module 'um_absent' on PYTHONPATH, among the installed packages or in the working "
                     f"directory {tmp_path}",
        "um_broken": "m.module: importing 'um_broken' failed: ModuleNotFoundError: No module named "
                     "'um_dependency_not_installed'",
        "um_keys": "m.module: Keys.hparam_keys must be a tuple of strings, got 'k'",
        "um_empty": "m.module: module 'um_empty' defines no subclass of rslib.training.base.TrainingMethod",
        "um keys": "m.module: 'um keys' is not 'package.module' or 'package.module:ClassName'",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError) as info:
            load_method_class(spec, "m.module")
        assert str(info.value) == message


def user_config(**entry) -> dict:
    """tests/configs/user_method.yaml with ``methods.gaussian_ls`` updated by ``entry``."""
    config = yaml.safe_load((REPO / "tests/configs/user_method.yaml").read_text())
    config["methods"]["gaussian_ls"].update(entry)
    return with_defaults(config, SCHEMA)


@pytest.fixture
def module_here(tmp_path, monkeypatch, isolated_path):
    """tests/workflow/user_method.py in the working directory, as the workflow test runs it."""
    (tmp_path / "user_method.py").write_text(USER_METHOD)
    monkeypatch.chdir(tmp_path)


def plan_of(config: dict) -> Plan:
    return Plan.from_config(config, reference=with_defaults(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA),
                            schema=SCHEMA)


def test_the_users_rows_follow_the_papers_in_single_model_artefacts(module_here):
    import jsonschema

    config = user_config()
    jsonschema.validate(config, SCHEMA)
    plan = plan_of(config)
    assert plan.user_methods["gaussian_ls"].hparam_keys == ("num_noise_vec", "label_smoothing")
    for name in ("table1", "table2", "table5", "table8", "figure1"):
        sources = plan.artefact_sources(name)
        assert [(s.marked_label, s.in_paper) for s in sources] == [("MACER", True), ("Gaussian-LS ¶", False)], name
    assert plan.artefact_sources("table3") == [] and plan.artefact_sources("figure3") == []
    params = plan.table_params("table1")
    assert params["sources"][0] == {"dataset": "digits", "sigma": "0.25", "name": "macer", "scheme": None,
                                    "seed": None, "origin": "trained"}  # as before methods of one's own existed
    assert Source(**params["sources"][1]).user_label == "Gaussian-LS"
    assert params["deviations"] == ["dataset digits (the paper: CIFAR-10)", NOT_IN_PAPER]
    # ensembles name a member method by its configuration name
    assert [s.label for s in plan.curve_sources("digits", "0.25")] == ["MACER", "Gaussian-LS",
                                                                      "EsbRS-gaussian_ls×1+MACER×1"]
    assert [job.get("module") for job in plan.train_cost_jobs()] == [None, "user_method"]
    assert plan.wildcard_constraints()["method"] == "gaussian_ls|macer"
    relabelled = plan_of(user_config(label="LS (ours)"))
    assert relabelled.artefact_sources("table1")[1].marked_label == "LS (ours) ¶"
    assert all(Source(**source_params(s)) == s for s in relabelled.artefact_sources("table1"))


def test_editing_the_users_module_changes_only_its_training_jobs_version(tmp_path, monkeypatch, isolated_path):
    """The train rule's ``version`` param: the paper's methods keep the bare stage version (their
    jobs' params are unchanged), a method of the user's own adds the SHA-256 of its file, so that
    Snakemake reruns its training (params changed) after the file is edited. (A module name of
    its own: under pytest, tests/workflow/ and its user_method.py are on the import path.)"""
    import hashlib

    from rslib.runtime.versions import STAGE_VERSIONS

    source = tmp_path / "um_version.py"
    source.write_text(USER_METHOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "um_version", raising=False)
    plan = plan_of(user_config(module="um_version"))
    digest = hashlib.sha256(USER_METHOD.encode()).hexdigest()
    assert plan.user_methods["gaussian_ls"].source_sha256 == digest
    assert plan.train_version("macer") == STAGE_VERSIONS["train"]
    assert plan.train_version("gaussian_ls") == f"{STAGE_VERSIONS['train']}+{digest[:16]}"
    source.write_text(USER_METHOD + "\n# the loss, edited\n")
    edited = plan_of(user_config(module="um_version"))
    assert edited.train_version("macer") == STAGE_VERSIONS["train"]
    edited_digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert edited.train_version("gaussian_ls") == f"{STAGE_VERSIONS['train']}+{edited_digest[:16]}" != \
        plan.train_version("gaussian_ls")
    sys.modules.pop("um_version", None)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["methods"]["gaussian_ls"]["digits"]["hparams"].update(label_smothing=0.2),
     "methods.gaussian_ls.digits.hparams: gaussian_ls does not read hyper-parameter 'label_smothing'; "
     "did you mean 'label_smoothing'?"),
    (lambda c: c["methods"]["gaussian_ls"]["digits"].update(by_sigma={"0.25": {"beta2": 0.9}}),
     "methods.gaussian_ls.digits.by_sigma.0.25: gaussian_ls does not read hyper-parameter 'beta2'; valid: epochs, "
     "batch_size, lr, momentum, weight_decay, lr_milestones, lr_gamma, augment, num_noise_vec, label_smoothing"),
    (lambda c: c["methods"].update(macr=c["methods"].pop("gaussian_ls")) or c["methods"]["macr"].pop("module"),
     "methods.macr: unknown training method 'macr'; did you mean 'macer'? the paper's are advmacer, consistency, "
     "gaussian, macer, smoothadv, smoothmix, and a method of your own names its class: "
     "methods.macr.module: package.module[:ClassName]"),
    (lambda c: c["methods"]["macer"].update(module="user_method"),
     "methods.macer.module: macer is one of the paper's methods and takes no module; give a method of your own "
     "another name"),
    (lambda c: c["methods"]["gaussian_ls"].update(label="MACER"),
     "methods.gaussian_ls: label 'MACER' is macer's label; give methods.gaussian_ls.label another one"),
])
def test_a_users_method_is_validated_like_the_papers(module_here, change, message):
    config = copy.deepcopy(user_config())
    change(config)
    with pytest.raises(ConfigError) as info:
        plan_of(config)
    assert str(info.value) == message


def test_tables_mark_the_users_rows_and_note_it_in_the_caption():
    from rslib.report.tables import build_table

    stats = {"acr": 0.5, "accuracy": 0.8}
    mine = {"name": "mine", "user_label": "Mine"}
    sources = [Source("cifar10", "0.25", "macer"), Source("cifar10", "0.25", **mine, origin="imported"),
               Source("cifar10", "1.00", **mine)]
    table = build_table("table1", sources, {s: stats for s in sources})
    assert [row[0] for row in table.rows] == ["MACER", "Mine ¶"]  # mixed origins: ‡ on the cell, ¶ on the label
    assert table.rows[1][1:] == ["0.500 (80.0%) ‡", "0.500 (80.0%)"]
    assert "‡ released checkpoint" in table.caption
    assert "¶ a method of this run's own (methods.<name>.module), not in the paper" in table.caption
    assert {r["row"] for r in table.records} == {"MACER", "Mine"}  # the CSV keeps the plain label
    assert "¶" not in build_table("table1", sources[:1], {sources[0]: stats}).caption


def test_the_comparison_lists_the_users_rows_apart_as_not_in_the_paper(tmp_path):
    from rslib.report.comparison import compare, write_comparison

    reported = tmp_path / "reported.csv"
    reported.write_text("table,sigma,row,metric,value,source_line\ntable1,0.25,MACER,acr,0.531,1\n"
                        "table1,0.25,Mine,acr,0.9,1\n")  # a paper row by the same label is never joined
    ours = tmp_path / "table1.csv"
    ours.write_text("table,sigma,row,metric,value,origin,low,high,seeds,seed_mean,seed_min,seed_max,deviation,device\n"
                    "table1,0.25,MACER,acr,0.50,trained,0.47,0.54,1,0.5,0.5,0.5,,\n"
                    f"table1,0.25,Mine,acr,0.60,trained,0.55,0.65,1,0.6,0.6,0.6,{NOT_IN_PAPER},\n"
                    f"table1,0.25,Mine,accuracy,0.70,trained,0.6,0.8,1,0.7,0.7,0.7,{NOT_IN_PAPER},\n")
    table = compare(reported, [ours])
    assert table[["row", "metric", "verdict", "reason"]].values.tolist() == [
        ["MACER", "acr", "reproduced", "paper 0.531 inside [0.470, 0.540]"],
        ["Mine", "accuracy", "not comparable", NOT_IN_PAPER], ["Mine", "acr", "not comparable", NOT_IN_PAPER]]
    assert table["paper"].isna().tolist() == [False, True, True]
    md, tex, csv, short = (tmp_path / f for f in ("c.md", "c.tex", "c.csv", "s.csv"))
    write_comparison(reported, [ours], "main: cifar10", md, tex, csv, short)
    compared, _, section = md.read_text().partition("## Rows not in the paper")
    assert "**1 of 1 cells reproduced, 0 differ.**" in compared and "1 cells compared" in compared
    assert "- Table 1: 1 of 1 cells reproduced, 0 differ; 2 cells of rows not in the paper" in compared
    assert "Mine" not in compared.split("| verdict |")[1]
    assert "| table1 | 0.25 | Mine | acr | 0.600 | [0.550, 0.650] |  | trained |" in section
    assert pd.read_csv(short).set_index("table").loc["table1", ["cells", "not_comparable"]].tolist() == [1, 0]
    assert r"Mine \P{} & acr & -- & 0.600 & -- &" in tex.read_text()
