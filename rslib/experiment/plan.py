"""The experiment plan: everything a validated configuration asks for, computed once.

``Plan.from_config(config)`` enumerates every model slot (trained, imported from a released
checkpoint, or reported from a published certification log), every ensemble certificate and
CertifyAdp run, the members whose outputs are stored, each dataset's evaluation size, the
sources of each of the paper's artefacts and the jobs of the GPU-hour estimate, and raises one
:class:`rslib.runtime.errors.ConfigError` naming the key for every inconsistency between the
configuration's sections. The Snakefile's rules, the cost estimate and the device check read this
one plan (``rules/common.smk`` holds only thin input functions over it); it imports no torch, unless
the configuration has a method of the user's own (``methods.<name>.module``), whose class it
imports to read its hyper-parameter keys and label.

Models and ensembles are plain dicts (``{"dataset", "method", "sigma", "seed"}``,
``{"dataset", "sigma", "ensemble", "scheme"}``): they travel as rule ``params`` into the
workflow scripts, and Snakemake reruns a job whose params change, so their shape is part of the
contract with existing results.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rslib.certification.bounds import certify_always_abstains, max_certifiable_radius
from rslib.data.registry import DatasetInfo, available_evaluation_images, dataset_info, dataset_source
from rslib.ensembles.schemes import METHOD_NAMES, SCHEMES, ensemble_members, get_scheme
from rslib.experiment.artefacts import (
    ARTEFACTS,
    NOT_IN_PAPER,
    TABLE_RADII,
    Configured,
    Source,
    artefact,
    member_sources,
    source_params,
)
from rslib.experiment.comparability import configuration_deviations
from rslib.experiment.config import merged_hparams, method_datasets, sigma_key
from rslib.experiment.paths import Paths
from rslib.experiment.released_files import missing_files_message
from rslib.models.formats import GENERIC_FORMATS, GENERIC_FORMATS_TEXT
from rslib.runtime.errors import ConfigError, DataError
from rslib.runtime.versions import STAGE_VERSIONS
from rslib.training.hparams import METHOD_KEYS, check_hparam_keys

Model = dict[str, Any]  #: {"dataset", "method", "sigma", "seed"}


def _released_network(where: str, entry: Mapping[str, Any], dataset_arch: str) -> tuple[str | None, Any]:
    """(arch, input_layer) that the import of a ``released.<σ>`` entry gets
    (:func:`rslib.models.released.released_model`): for the reference formats the dataset's
    ``arch`` and the entry's ``input_layer`` (the values of every earlier version, so existing
    imports keep their params); for ``state_dict`` its ``builder``, for ``torchscript`` and
    ``exported`` None; and for all three ``{"mean", "std"}`` when the entry gives them.
    Inconsistent keys raise ConfigError."""
    fmt = entry["format"]
    has_norm = "mean" in entry or "std" in entry
    if fmt not in GENERIC_FORMATS:
        if "builder" in entry:
            raise ConfigError(f"{where}: builder applies to format state_dict only (format {fmt} reads its "
                              f"architecture from the file)")
        if has_norm:
            raise ConfigError(f"{where}: mean/std apply to formats {GENERIC_FORMATS_TEXT}; format {fmt} takes "
                              f"input_layer (normalize, center, none)")
        return dataset_arch, entry.get("input_layer")
    if fmt == "state_dict" and "builder" not in entry:
        raise ConfigError(f"{where}: format state_dict needs builder: \"package.module:function\", the function "
                          f"that returns the network its weights fit")
    if fmt != "state_dict" and "builder" in entry:
        what = "a TorchScript" if fmt == "torchscript" else "a torch.export"
        raise ConfigError(f"{where}: builder applies to format state_dict only ({what} archive holds its network)")
    if has_norm and not ("mean" in entry and "std" in entry):
        raise ConfigError(f"{where}: give both mean and std (the input normalisation (x - mean) / std)")
    if has_norm and "input_layer" in entry:
        raise ConfigError(f"{where}: give input_layer or mean/std, not both")
    input_layer = {"mean": list(entry["mean"]), "std": list(entry["std"])} if has_norm else entry.get("input_layer")
    return entry.get("builder"), input_layer


def model_label(m: Mapping[str, Any]) -> str:
    return f"{m['dataset']}/{m['method']}/σ={m['sigma']}/seed {m['seed']}"


def _slot(m: Mapping[str, Any]) -> tuple[str, str, str, int]:
    return m["dataset"], m["method"], m["sigma"], int(m["seed"])


@dataclass(frozen=True)
class UserMethod:
    """A method of the user's own (``methods.<name>.module``), as its class declares it."""

    module: str  #: ``package.module[:ClassName]``
    label: str  #: how tables name its rows: ``methods.<name>.label``, else the class's ``label``, else the name
    hparam_keys: tuple[str, ...]  #: the keys it reads beyond the loop's (the class's ``hparam_keys``)
    source_sha256: str  #: of the file defining the class (:func:`rslib.training.user_methods.source_digest`)


class Plan:
    """The plan of one configuration; build it with :meth:`from_config`."""

    def __init__(self, config: Mapping[str, Any], reference: Mapping[str, Any] | None = None,
                 manifest: Mapping[str, Any] | None = None) -> None:
        self.config = config
        #: the paper's configuration (``config.yaml``): what a cell must match to be comparable
        self.reference = reference
        self.paths = Paths(config["data_dir"], config["results_dir"])
        self.paper = config["paper"]
        #: every (dataset, method, σ, seed) model slot, trained or imported; the released file of
        #: each imported one; the published log of each (dataset, σ, method) row reported from one
        self.models: list[Model] = []
        self.released: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self.published_logs: dict[tuple[str, str, str], str] = {}
        #: what each configured dataset is (registered, or the user's own read from its entry and files)
        self.dataset_infos = self._dataset_infos()
        #: each method of the user's own, by its name
        self.user_methods: dict[str, UserMethod] = self._user_methods()
        self._grid()
        self.trained = [m for m in self.models if not self.is_released(m)]
        self.evaluation_images = self._evaluation_sizes()
        #: every (dataset, σ, ensemble, scheme) certificate and (dataset, σ, ensemble) CertifyAdp run
        self.ensembles: list[dict[str, Any]] = []
        self.adaptive: list[dict[str, Any]] = []
        self._ensembles()
        #: models whose outputs are stored for ensembles
        self.stored_members = {
            (e["dataset"], method, e["sigma"], seed)
            for e in self.ensembles if self.stores_outputs(e["dataset"])
            for method, seed in ensemble_members(e["ensemble"], self.trained_seeds(e["dataset"], e["sigma"]))
        }
        #: released files and published logs that are not on disk, as one message (None: all there)
        self.missing_released = missing_files_message(
            [r["path"] for r in self.released.values()] + list(self.published_logs.values()), manifest or {})
        self.configured = self._configured()
        self._table_params: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, reference: Mapping[str, Any] | None = None,
                    manifest: Mapping[str, Any] | None = None, schema: Mapping[str, Any] | None = None) -> Plan:
        """The plan of a configuration validated against the schema (defaults filled in).

        ``reference`` is the paper's configuration (for comparability), ``manifest`` the released
        files' manifest (:func:`rslib.experiment.released_files.load_manifest`) and ``schema`` the
        configuration schema, whose ``hparams`` definition checks each per-σ override merged
        into its method's hyper-parameters. Raises :class:`ConfigError` naming the key."""
        plan = cls(config, reference, manifest)
        plan._check_hparams(schema)
        return plan

    # --- the grid ------------------------------------------------------------------------------
    def _user_methods(self) -> dict[str, UserMethod]:
        """Each configured method that is not the paper's must name its class (``module``); its
        class is imported (with torch) for its hyper-parameter keys and label. Labels are unique
        and not the paper's, so that table rows and the comparison cannot mix them up."""
        from rslib.training.user_methods import load_method_class, source_digest

        found: dict[str, UserMethod] = {}
        taken = {label: name for name, label in METHOD_NAMES.items()}
        for name, entry in self.config["methods"].items():
            where = f"methods.{name}"
            if name in METHOD_KEYS:
                extra = [k for k in ("module", "label") if k in entry]
                if extra:
                    raise ConfigError(f"{where}.{extra[0]}: {name} is one of the paper's methods and takes no "
                                      f"{extra[0]}; give a method of your own another name")
                continue
            if "module" not in entry:
                close = difflib.get_close_matches(name, list(METHOD_KEYS), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{where}: unknown training method {name!r}; {hint}the paper's are "
                                  f"{', '.join(sorted(METHOD_KEYS))}, and a method of your own names its class: "
                                  f"{where}.module: package.module[:ClassName]")
            cls = load_method_class(entry["module"], f"{where}.module")
            label = entry.get("label") or cls.label or name
            if label in taken or label.startswith("EsbRS-"):
                owner = f"{taken[label]}'s label" if label in taken else "an ensemble's label"
                raise ConfigError(f"{where}: label {label!r} is {owner}; give {where}.label another one")
            taken[label] = name
            found[name] = UserMethod(entry["module"], label, tuple(cls.hparam_keys), source_digest(cls))
        return found

    def _grid(self) -> None:
        config = self.config
        for method in config["methods"]:
            for dataset, settings in method_datasets(config, method).items():
                where = f"methods.{method}.{dataset}"
                if dataset not in config["datasets"]:
                    raise ConfigError(f"{where}: dataset {dataset!r} is not configured under `datasets`")
                dataset_sigmas = {sigma_key(s) for s in config["datasets"][dataset]["sigmas"]}
                sigmas = [sigma_key(s) for s in settings.get("sigmas", config["datasets"][dataset]["sigmas"])]
                unknown = sorted(set(sigmas) - dataset_sigmas)
                if unknown:
                    raise ConfigError(f"{where}.sigmas: {unknown} not in datasets.{dataset}.sigmas")
                seeds_by_sigma = {sigma_key(k): v for k, v in settings.get("seeds_by_sigma", {}).items()}
                for section in ("by_sigma", "seeds_by_sigma", "released"):
                    for key in settings.get(section, {}):
                        if sigma_key(key) not in sigmas:
                            raise ConfigError(f"{where}.{section}: sigma {key} is not configured for this method")
                for key in settings.get("published_logs", {}):  # a log may report a σ the method does not train at
                    if sigma_key(key) not in dataset_sigmas:
                        raise ConfigError(f"{where}.published_logs: sigma {key} is not in datasets.{dataset}.sigmas")
                released_here = {sigma_key(k): v for k, v in settings.get("released", {}).items()}
                if self.dataset_infos[dataset].user is not None:
                    for section in ("released", "published_logs"):
                        if settings.get(section):
                            raise ConfigError(f"{where}.{section}: released checkpoints and published logs are "
                                              f"read for the registered datasets only, not for {dataset}")
                for key, path in settings.get("published_logs", {}).items():
                    self.published_logs[(dataset, sigma_key(key), method)] = path
                for sigma in sigmas:
                    seeds = seeds_by_sigma.get(sigma, settings["seeds"])
                    if sigma in released_here:
                        entry = released_here[sigma]
                        if len(entry["files"]) != len(seeds):
                            raise ConfigError(f"{where}.released.{sigma}: {len(entry['files'])} files for {len(seeds)} "
                                              f"seed slots {seeds}; give one file per seed")
                        arch, input_layer = _released_network(f"{where}.released.{sigma}", entry,
                                                              config["datasets"][dataset]["arch"])
                        for seed, path in zip(seeds, entry["files"]):
                            self.released[(dataset, method, sigma, seed)] = dict(
                                path=path, format=entry["format"], input_layer=input_layer,
                                allow_pickle=entry.get("allow_pickle", False),
                                accept_implausible=entry.get("accept_implausible", False), arch=arch,
                            )
                    elif seeds and "hparams" not in settings:
                        raise ConfigError(f"{where}: hparams are missing, and sigma {sigma} has no released "
                                          f"checkpoints to import")
                    self.models += [dict(dataset=dataset, method=method, sigma=sigma, seed=seed) for seed in seeds]
                if not settings["seeds"] and not seeds_by_sigma and not settings.get("published_logs"):
                    raise ConfigError(f"{where}: no seeds and no published_logs: nothing to train, import or report")

    def _check_hparams(self, schema: Mapping[str, Any] | None) -> None:
        """Every method's hparams and each per-σ override: keys the method reads (a misspelt key
        would silently leave its default in force) and, merged per σ, values of the right type
        (the hparams themselves passed the schema with the whole configuration; the merged
        overrides did not)."""
        validator = None
        if schema is not None:
            import jsonschema

            validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/hparams", "$defs": schema["$defs"]})
        for method in self.config["methods"]:
            keys = self.user_methods[method].hparam_keys if method in self.user_methods else None
            for dataset, settings in method_datasets(self.config, method).items():
                where = f"methods.{method}.{dataset}"
                check_hparam_keys(method, settings.get("hparams", {}), f"{where}.hparams", keys)
                for key, override in settings.get("by_sigma", {}).items():
                    check_hparam_keys(method, override, f"{where}.by_sigma.{key}", keys)
                if "hparams" not in settings or validator is None:
                    continue
                for key, override in settings.get("by_sigma", {}).items():
                    merged = {**settings["hparams"], **override}
                    error = next(iter(sorted(validator.iter_errors(merged), key=lambda e: list(e.path))), None)
                    if error is not None:
                        field = ".".join(str(p) for p in error.path) or "hparams"
                        raise ConfigError(f"{where}.by_sigma.{key}: {field}: {error.message}")

    def _dataset_infos(self) -> dict[str, DatasetInfo]:
        """The :class:`DatasetInfo` of each configured dataset: the registry's, or one built from
        the entry of a dataset of the user's own (its array headers or file names are read here)."""
        infos = {}
        for name, settings in self.config["datasets"].items():
            try:
                infos[name] = dataset_info(name, settings)
            except DataError as e:
                raise ConfigError(str(e)) from None
        return infos

    def data_source(self, dataset: str) -> Any:
        """What the data rule prepares ``dataset`` from (:func:`rslib.data.registry.dataset_source`)."""
        return dataset_source(dataset, self.config["datasets"][dataset])

    def user_files(self, dataset: str) -> list[str]:
        """The npz files of a dataset of the user's own (``kind: npz``), inputs of its preparation."""
        user = self.dataset_infos[dataset].user
        return [user.train, user.test] if user is not None and user.kind == "npz" else []

    def _evaluation_sizes(self) -> dict[str, int]:
        """Images in each dataset's evaluation subset, checked against the test split's size before
        any job runs: the registry's, or what a user's files hold (ImageNet is checked again
        against the user's folder, once prepared)."""
        sizes = {}
        for name, settings in self.config["datasets"].items():
            ev = settings["evaluation"]
            test_images = self.dataset_infos[name].test_images
            available = available_evaluation_images(test_images, ev["start"], ev["stride"])
            if ev["count"] > available:
                raise ConfigError(f"datasets.{name}.evaluation: count {ev['count']} but {name}'s {test_images} test "
                                  f"images give only {available} from start {ev['start']} with stride {ev['stride']}")
            sizes[name] = ev["count"]
        return sizes

    def _ensembles(self) -> None:
        for n, group in enumerate(self.config["ensembles"]["build"]):
            where = f"ensembles.build[{n}]"
            dataset = group["dataset"]
            if dataset not in self.config["datasets"]:
                raise ConfigError(f"{where}: dataset {dataset!r} is not configured under `datasets`")
            settings = self.config["datasets"][dataset]
            for sigma in [sigma_key(s) for s in group.get("sigmas", settings["sigmas"])]:
                for name in group["members"]:
                    try:
                        ensemble_members(name, self.trained_seeds(dataset, sigma))
                    except ValueError as e:
                        raise ConfigError(f"{where}, {dataset} sigma {sigma}: {e}") from None
                    for scheme in group["schemes"]:
                        if get_scheme(scheme).fitted and not settings["heldout_images"]:
                            raise ConfigError(f"{where}: scheme {scheme} fits weights on held-out training images; "
                                              f"set datasets.{dataset}.heldout_images")
                        entry = dict(dataset=dataset, sigma=sigma, ensemble=name, scheme=scheme)
                        if entry not in self.ensembles:
                            self.ensembles.append(entry)
                    if group.get("adaptive", False):
                        entry = dict(dataset=dataset, sigma=sigma, ensemble=name)
                        if entry not in self.adaptive:
                            self.adaptive.append(entry)

    def is_released(self, m: Mapping[str, Any]) -> bool:
        return _slot(m) in self.released

    def released_file(self, m: Mapping[str, Any]) -> dict[str, Any]:
        """{path, format, input_layer, allow_pickle, accept_implausible, arch} of the released
        checkpoint that fills slot ``m`` (``arch`` and ``input_layer``: :func:`_released_network`);
        every missing released file at once when any is missing."""
        if not self.is_released(m):
            raise ConfigError(f"{m['dataset']}/{m['method']}/sigma{m['sigma']}/seed{m['seed']} has no released "
                              f"checkpoint in methods.{m['method']}.{m['dataset']}.released: it is trained")
        self.require_released_files()
        return self.released[_slot(m)]

    def published_log(self, dataset: str, sigma: str, method: str) -> str:
        """The published certification log configured for (dataset, σ, method)."""
        if (dataset, sigma, method) not in self.published_logs:
            raise ConfigError(f"no published log configured in methods.{method}.{dataset}.published_logs for "
                              f"sigma {sigma}")
        self.require_released_files()
        return self.published_logs[(dataset, sigma, method)]

    def require_released_files(self) -> None:
        if self.missing_released:
            raise ConfigError(self.missing_released)

    def trained_seeds(self, dataset: str, sigma: str) -> dict[str, list[int]]:
        """{method: [seeds in configured order]} of the model slots at (dataset, σ)."""
        seeds: dict[str, list[int]] = {}
        for m in self.models:
            if m["dataset"] == dataset and m["sigma"] == sigma:
                seeds.setdefault(m["method"], []).append(m["seed"])
        return seeds

    def method_settings(self, dataset: str, method: str) -> Mapping[str, Any]:
        try:
            return self.config["methods"][method][dataset]
        except KeyError:
            raise ConfigError(f"method {method!r} is not configured for dataset {dataset!r}") from None

    def hparams(self, dataset: str, method: str, sigma: str) -> dict[str, Any]:
        """The method's hparams for this dataset with its per-σ overrides applied ({} for a method
        configured only with released checkpoints)."""
        self.method_settings(dataset, method)  # a clear error for an unconfigured (method, dataset)
        return merged_hparams(self.config, method, dataset, sigma)

    def train_hparams(self, m: Mapping[str, Any]) -> dict[str, Any]:
        """What the train rule trains slot ``m`` with; a slot filled by a released checkpoint is not trained."""
        if self.is_released(m):
            raise ConfigError(f"{model_label(m)} is imported from the released checkpoint "
                              f"{self.released_file(m)['path']} (methods.{m['method']}.{m['dataset']}.released), "
                              f"not trained: ask for {self.model_file(m)}")
        return self.hparams(m["dataset"], m["method"], m["sigma"])

    def train_version(self, method: str) -> int | str:
        """The train rule's ``version`` param: the training stage's version
        (:data:`rslib.runtime.versions.STAGE_VERSIONS`), and for a method of the user's own also the
        SHA-256 of the file defining its class, so that Snakemake reruns its training jobs (params
        changed) when that file changes. The paper's methods keep the bare number: their jobs'
        params are those of earlier runs."""
        version = STAGE_VERSIONS["train"]
        if method not in self.user_methods:
            return version
        return f"{version}+{self.user_methods[method].source_sha256[:16] or 'no-source-file'}"

    # --- files of a slot -----------------------------------------------------------------------
    def model_file(self, m: Mapping[str, Any]) -> str:
        """The model file of a slot: trained (results/models/…) or imported (results/imported/…)."""
        template = self.paths.imported_model if self.is_released(m) else self.paths.trained_model
        return Paths.fill(template, **{k: m[k] for k in ("dataset", "method", "sigma", "seed")})

    def certificate(self, m: Mapping[str, Any]) -> str:
        return Paths.fill(self.paths.certificate, **{k: m[k] for k in ("dataset", "method", "sigma", "seed")})

    def evaluation(self, dataset: str) -> dict[str, int]:
        """The dataset's evaluation subset (start, stride, count); the scripts compute the indices."""
        return dict(self.config["datasets"][dataset]["evaluation"])

    def shard_ids(self, dataset: str) -> range:
        return range(min(self.config["certify"]["shards"], self.evaluation_images[dataset]))

    def certify_inputs(self, m: Mapping[str, Any], shard: int | str) -> dict[str, str]:
        """A model whose outputs are stored for ensembles is certified from its stored class counts
        (same noise, same float32 counts, no second network pass); any other model directly."""
        if _slot(m) in self.stored_members and not self.config["certify"]["autocast_bf16"]:
            return {"outputs": Paths.fill(self.paths.member_outputs, shard=shard, **m)}
        return {"model": self.model_file(m)}

    # --- ensembles -----------------------------------------------------------------------------
    def ensemble_models(self, dataset: str, sigma: str, ensemble: str) -> list[Model]:
        """Member models of an ensemble, in configured seed order."""
        members = ensemble_members(ensemble, self.trained_seeds(dataset, sigma))
        return [dict(dataset=dataset, method=m, sigma=sigma, seed=s) for m, s in members]

    def stores_outputs(self, dataset: str) -> bool:
        """Ensembles of this dataset reduce stored member outputs (else evaluate members directly)."""
        return self.config["datasets"][dataset]["ensemble_evaluation"] == "stored"

    def ensemble_evaluation(self, dataset: str) -> str:
        """How a dataset's ensembles are certified, as the ensemble summary says it."""
        if self.stores_outputs(dataset):
            return f"stored {self.config['datasets'][dataset]['stored_output_dtype']} outputs"
        return "direct evaluation"

    def member_output_shards(self, dataset: str, sigma: str, ensemble: str, pseudo: bool = False) -> list[str]:
        """Every output shard (or pseudo-model output shard) of every member, member-major."""
        template = self.paths.pseudo_outputs if pseudo else self.paths.member_outputs
        return [Paths.fill(template, shard=shard, **m) for m in self.ensemble_models(dataset, sigma, ensemble)
                for shard in self.shard_ids(dataset)]

    def scheme_settings(self, scheme_name: str) -> dict[str, Any]:
        """The ``ensembles`` settings a scheme reads (only those: changing SWEEN's settings must not
        rerun the average-weight certificates)."""
        scheme = get_scheme(scheme_name)
        keys = set()
        if scheme.per_point or scheme.fitted == "optimal":
            keys.add("optimal")
        if scheme.fitted == "sween" or scheme.aggregation == "sween_adaptive":
            keys.add("sween")
        if scheme.aggregation == "k_consensus":
            keys.add("k_consensus")
        return {k: self.config["ensembles"][k] for k in sorted(keys)}

    def ensemble_certificate(self, e: Mapping[str, Any]) -> str:
        return Paths.fill(self.paths.ensemble_certificate, **e)

    @staticmethod
    def fitted(scheme: str) -> str | None:
        """The held-out fit a scheme's weights come from ("optimal", "sween"), or None."""
        return get_scheme(scheme).fitted

    @staticmethod
    def per_point(scheme: str) -> bool:
        """Whether a scheme's weights are computed per test point (EsbRS Alg. 2: pseudo-model outputs)."""
        return get_scheme(scheme).per_point

    # --- the paper's artefacts -----------------------------------------------------------------
    def _configured(self) -> Configured:
        first_seed, origins = {}, {}
        for m in self.models:
            key = (m["dataset"], m["sigma"], m["method"])
            if key not in first_seed:
                first_seed[key] = m["seed"]
                origins[key] = "imported" if self.is_released(m) else "trained"
        origins.update({key: "published log" for key in self.published_logs})  # a configured log stands for the row
        return Configured(
            first_seed=first_seed,
            ensembles={(e["dataset"], e["sigma"], e["ensemble"], e["scheme"]) for e in self.ensembles},
            sigmas={d: [sigma_key(s) for s in v["sigmas"]] for d, v in self.config["datasets"].items()},
            origins=origins,
            user_labels={name: method.label for name, method in self.user_methods.items()},
        )

    def artefact_sources(self, name: str) -> list[Source]:
        """Sources (single models, ensemble certificates) that an artefact reports, as configured."""
        return artefact(name).sources(self.paper, self.configured)

    def artefact_members(self, name: str) -> list[Source]:
        """Members of Table 3's ensembles (configured seed order): their certification time is part
        of the ensemble's."""
        if artefact(name).layout != "ensemble_weights":
            return []
        members: list[Source] = []
        for src in self.artefact_sources(name):
            if not src.single:
                for m in member_sources(src, self.trained_seeds(src.dataset, src.sigma)):
                    if m not in members:
                        members.append(m)
        return members

    def curve_sources(self, dataset: str, sigma: str) -> list[Source]:
        """Every method (first seed) and every average-weight ensemble certified at (dataset, σ)."""
        singles = [Source(dataset, sigma, method, origin=origin, user_label=self.configured.user_labels.get(method))
                   for (d, s, method), origin in self.configured.origins.items() if (d, s) == (dataset, sigma)]
        ensembles = [Source(d, s, name, scheme) for (d, s, name, scheme) in sorted(self.configured.ensembles)
                     if (d, s, scheme) == (dataset, sigma, "average")]
        return singles + ensembles

    def curves(self) -> list[str]:
        """One radius-accuracy figure per configured (dataset, σ)."""
        return [Paths.fill(self.paths.curves, dataset=d, sigma=sigma_key(s))
                for d, v in self.config["datasets"].items() for s in v["sigmas"]]

    def source_model(self, src: Source) -> Model:
        seed = self.configured.first_seed[(src.dataset, src.sigma, src.name)] if src.seed is None else src.seed
        return dict(dataset=src.dataset, method=src.name, sigma=src.sigma, seed=seed)

    def source_certificate(self, src: Source) -> str:
        if src.single and src.origin == "published log":
            return Paths.fill(self.paths.published_certificate, dataset=src.dataset, method=src.name, sigma=src.sigma)
        if src.single:
            return self.certificate(self.source_model(src))
        return self.ensemble_certificate(dict(dataset=src.dataset, sigma=src.sigma, ensemble=src.name,
                                              scheme=src.scheme))

    def source_record(self, src: Source) -> str:
        """The certify.json written beside a source's certificate (its provenance: devices, times)."""
        return self.source_certificate(src).replace("certify.tsv", "certify.json")

    def source_curve(self, src: Source) -> str:
        """The training curve of a single model this workflow trained (imported and published rows have none)."""
        return Paths.fill(self.paths.training_curve, **self.source_model(src))

    def source_hparams(self, src: Source) -> dict[str, Any]:
        """Table 2's T, m, ε, epochs of a single-model row: its configured hparams ({} if none)."""
        return self.hparams(src.dataset, src.name, src.sigma) if src.single else {}

    def source_seed_models(self, src: Source) -> list[Model]:
        """Every seed slot of a trained single-model row, first seed first: its seed spread. None for
        ensembles, published logs and imported rows (released checkpoints in further slots are other
        configurations, e.g. other ε, not seeds of the row's)."""
        if not src.single or src.origin != "trained":
            return []
        return [m for m in self.models if (m["dataset"], m["sigma"], m["method"]) == (src.dataset, src.sigma, src.name)]

    def source_deviations(self, src: Source, name: str) -> str:
        """Why the cells of ``src`` in artefact ``name`` are not comparable with the paper ("" when
        they are): each setting that differs from the reference configuration, or, for a method
        of the user's own, :data:`rslib.experiment.artefacts.NOT_IN_PAPER`."""
        if self.reference is None:
            raise ConfigError("the plan has no reference configuration to compare with")
        if not src.in_paper:
            return NOT_IN_PAPER
        if src.single:
            trained = [src.name] if src.origin == "trained" else []
            settings: list[str] = []
        else:
            trained = sorted({m for m, seed in ensemble_members(src.name, self.trained_seeds(src.dataset, src.sigma))
                              if not self.is_released(dict(dataset=src.dataset, method=m, sigma=src.sigma, seed=seed))})
            settings = list(self.scheme_settings(src.scheme))
        return "; ".join(configuration_deviations(self.config, self.reference, name, src.sigma, trained, settings,
                                                  certified_here=src.origin != "published log"))

    def table_inputs(self, name: str) -> dict[str, list[str]]:
        """What one table reads: its sources' certificates, the training curves of its trained
        singles, the certificates of Table 3's ensemble members (their time is part of the
        ensemble's), the further seeds of trained single-model rows (seed spread, bootstrap over
        seeds) and the certify.json beside each certificate (the devices behind time cells)."""
        sources, members = self.artefact_sources(name), self.artefact_members(name)
        return dict(
            certificates=[self.source_certificate(s) for s in sources],
            curves=[self.source_curve(s) for s in sources if s.has_curve],
            members=[self.source_certificate(s) for s in members],
            seeds=[self.certificate(m) for s in sources for m in self.source_seed_models(s)[1:]],
            records=[self.source_record(s) for s in sources],
            member_records=[self.source_record(s) for s in members],
        )

    def table_params(self, name: str) -> dict[str, Any]:
        """The lists that travel with a table's job to :func:`rslib.report.tables.write_table`:
        its sources and Table 3's members (as dicts), each source's hyper-parameters, the number of
        its further seeds and why it is not comparable with the paper, and the dataset."""
        if name not in self._table_params:
            sources = self.artefact_sources(name)
            self._table_params[name] = dict(
                sources=[source_params(s) for s in sources],
                members=[source_params(s) for s in self.artefact_members(name)],
                hparams=[self.source_hparams(s) for s in sources],
                seed_counts=[len(self.source_seed_models(s)[1:]) for s in sources],
                deviations=[self.source_deviations(s, name) for s in sources],
                dataset=self.paper[artefact(name).dataset],
            )
        return self._table_params[name]

    def figure_inputs(self, name: str) -> dict[str, list[str]]:
        """A figure's certificates (Figure 1 is drawn from the training curves alone) and curves."""
        sources = self.artefact_sources(name)
        return dict(
            certificates=[] if artefact(name).layout == "training_curves" else [self.source_certificate(s) for s in sources],
            curves=[self.source_curve(s) for s in sources if s.has_curve],
        )

    @property
    def report_radii(self) -> list[float]:
        """The radii of the run's own summary tables: ``report.radii``, else the paper's columns."""
        return list(self.config["report"].get("radii") or TABLE_RADII)

    # --- guardrails --------------------------------------------------------------------------
    def radii_asked(self, dataset: str, sigma: str) -> list[float]:
        """Every radius a table of this run reports at (dataset, σ): the run's summaries
        (:attr:`report_radii`) and the columns of the paper's tables on that dataset and σ."""
        radii = set(self.report_radii)
        for a in ARTEFACTS.values():
            if a.radii and self.paper[a.dataset] == dataset and sigma in a.sigmas(self.paper, self.configured, dataset):
                radii |= set(a.radii)
        return sorted(radii)

    def warnings(self) -> list[str]:
        """What this configuration cannot give, said while it is read: a CERTIFY budget
        (``certify.n`` and ``alpha``, or the training curves') that abstains on every image
        (Cohen et al.'s bound α^(1/n) < ½), and σ at which ``certify.n``/``alpha`` cannot reach the
        largest radius a table asks for — the largest certifiable radius is σ·Φ⁻¹(α^(1/n))
        (:func:`rslib.certification.bounds.max_certifiable_radius`) — up to where the paper's
        protocol (the reference configuration's n and α, else n = 100,000, α = 0.001) reaches, so
        that the paper's own columns beyond 3.81σ, which read 0 in the paper too, warn nobody."""
        out = []
        for section in ("certify", "training_curves"):
            n, alpha = self.config[section]["n"], self.config[section]["alpha"]
            if certify_always_abstains(n, alpha):
                out.append(f"{section}.n = {n} with alpha = {alpha} can never certify: even {n} of {n} votes bound "
                           f"p_A below 1/2 (alpha^(1/n) = {alpha ** (1 / n):.3f}), so every image abstains; raise "
                           f"{section}.n")
        n, alpha = self.config["certify"]["n"], self.config["certify"]["alpha"]
        paper = self.reference["certify"] if self.reference else {"n": 100_000, "alpha": 0.001}
        for dataset, settings in self.config["datasets"].items():
            for sigma in [sigma_key(s) for s in settings["sigmas"]]:
                reachable = max_certifiable_radius(n, alpha, float(sigma))
                asked = max(self.radii_asked(dataset, sigma))
                wanted = min(asked, max_certifiable_radius(paper["n"], paper["alpha"], float(sigma)))
                if reachable < wanted and not certify_always_abstains(n, alpha):
                    out.append(f"{dataset} sigma {sigma}: certify.n = {n} with alpha = {alpha} certifies radii up to "
                               f"{reachable:.4g} (sigma * Phi^-1(alpha^(1/n))), but its tables ask for radii up to "
                               f"{asked:g}: every column above {reachable:.4g} reads 0, where the paper's n = "
                               f"{paper['n']} reaches {wanted:.4g}; raise certify.n to certify larger radii")
        return out

    # --- the GPU-hour estimate -----------------------------------------------------------------
    def _cost_job(self, m: Model) -> dict[str, Any]:
        """A job of the estimate; one of a method of the user's own names its class (``module``)."""
        data = self.config["datasets"][m["dataset"]]
        job = dict(m, sigma=float(m["sigma"]), arch=data["arch"],
                   hparams=self.hparams(m["dataset"], m["method"], m["sigma"]), heldout=data["heldout_images"])
        if m["method"] in self.user_methods:
            job["module"] = self.user_methods[m["method"]].module
        return job

    def train_cost_jobs(self) -> list[dict[str, Any]]:
        """Every training job with its merged hparams."""
        return [self._cost_job(m) for m in self.trained]

    def imported_cost_jobs(self) -> list[dict[str, Any]]:
        """Imported models whose training settings are configured (hparams beside ``released``): what
        training them here would cost, i.e. the GPU-hours the released checkpoints save."""
        return [self._cost_job(m) for m in self.models
                if self.is_released(m) and self.hparams(m["dataset"], m["method"], m["sigma"])]

    def imported_unpriced(self) -> list[str]:
        """Imported models without configured hparams: their training cost cannot be estimated."""
        return [model_label(m) for m in self.models
                if self.is_released(m) and not self.hparams(m["dataset"], m["method"], m["sigma"])]

    def certify_cost_jobs(self) -> list[dict[str, Any]]:
        """One certification pass per model (an ensemble member's stored outputs are its pass)."""
        certify = self.config["certify"]
        return [dict(dataset=m["dataset"], arch=self.config["datasets"][m["dataset"]]["arch"], model=model_label(m),
                     method=m["method"], sigma=float(m["sigma"]), images=self.evaluation_images[m["dataset"]],
                     n0=certify["n0"], n=certify["n"])
                for m in self.models]

    def measures_costs(self) -> bool:
        """Whether anything is trained, imported or certified (else no GPU job measures costs)."""
        return bool(self.train_cost_jobs() + self.imported_cost_jobs() + self.certify_cost_jobs())

    # --- wildcard constraints ------------------------------------------------------------------
    def wildcard_constraints(self) -> dict[str, str]:
        """A regex per wildcard: exactly the configured values (so a mistyped target is refused
        rather than matched by the wrong rule)."""
        import re

        def alternatives(values: Sequence[Any]) -> str:
            return "|".join(re.escape(str(v)) for v in sorted(set(values)))

        datasets = self.config["datasets"]
        return dict(
            dataset=alternatives(list(datasets)),
            method=alternatives(list(self.config["methods"])),
            sigma=alternatives([sigma_key(s) for d in datasets.values() for s in d["sigmas"]]),
            seed=r"\d+",
            shard=r"\d+",
            ensemble=alternatives([e["ensemble"] for e in self.ensembles + self.adaptive] or ["none"]),
            scheme=alternatives(list(SCHEMES)),
            fit=alternatives([s.fitted for s in SCHEMES.values() if s.fitted]),
        )


def full_grid(config: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training jobs, certification jobs) of the full retraining grid of ``config``: every slot
    with configured hparams is a training job, released checkpoints included (what training them
    all here would cost), and every slot one certification pass. For the device check and the
    cost estimate outside Snakemake."""
    plan = Plan.from_config(copy.deepcopy(dict(config)))
    return plan.train_cost_jobs() + plan.imported_cost_jobs(), plan.certify_cost_jobs()
