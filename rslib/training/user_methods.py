"""Training methods of the user's own: ``methods.<name>.module`` names a
:class:`rslib.training.base.TrainingMethod` subclass as ``"package.module:ClassName"``, or as
``"package.module"`` when that module defines exactly one subclass (docs/methods.md, "Your own
method").

Where the module is found: on Python's import path (``PYTHONPATH``, installed packages), else in
the working directory of the run (``snakemake --directory``, which is where every job runs,
locally or on a cluster node that shares the file system). Importing it imports torch (the method
is torch code): a configuration with a method of the user's own imports torch while Snakemake
builds its DAG, to read the class's hyper-parameter keys and label; the paper's six methods do
not (their keys are :data:`rslib.training.hparams.METHOD_KEYS`).

No torch at import time: the workflow imports this module while it builds the DAG.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
from types import ModuleType
from typing import Any

from rslib.runtime.errors import ConfigError

#: ``package.module`` or ``package.module:ClassName``
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$"


def _missing_itself(error: ModuleNotFoundError, module: str) -> bool:
    """Whether ``error`` says ``module`` (or a package above it) is missing, not a module it imports."""
    parts = module.split(".")
    return error.name in {".".join(parts[:k]) for k in range(1, len(parts) + 1)}


def _import(module: str, where: str) -> ModuleType:
    """Import ``module``; when it is not on the import path, from the working directory."""
    try:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            cwd = os.getcwd()
            if not _missing_itself(e, module) or cwd in sys.path:
                raise
            sys.path.append(cwd)  # after PYTHONPATH and installed packages
            importlib.invalidate_caches()
            return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if _missing_itself(e, module):
            raise ConfigError(f"{where}: no module {module!r} on PYTHONPATH, among the installed packages or in the "
                              f"working directory {os.getcwd()}") from None
        raise ConfigError(f"{where}: importing {module!r} failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # a syntax error or a failing import inside the user's module: one line
        raise ConfigError(f"{where}: importing {module!r} failed: {type(e).__name__}: {e}") from None


def load_method_class(spec: str, where: str) -> type[Any]:
    """The :class:`~rslib.training.base.TrainingMethod` subclass that ``spec``
    (``package.module[:ClassName]``) names, with its declaration checked (``hparam_keys`` a
    tuple of strings, ``label`` None or a string); ``where`` names the configuration key in
    the one-line :class:`ConfigError` of any problem."""
    if not re.match(MODULE_PATTERN, spec):
        raise ConfigError(f"{where}: {spec!r} is not 'package.module' or 'package.module:ClassName'")
    module_name, _, class_name = spec.partition(":")
    module = _import(module_name, where)
    from rslib.training.base import TrainingMethod

    if class_name:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, TrainingMethod)):
            what = "no class" if cls is None else "no TrainingMethod subclass"
            raise ConfigError(f"{where}: module {module_name!r} has {what} {class_name!r} "
                              f"(a subclass of rslib.training.base.TrainingMethod)")
    else:
        found = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, TrainingMethod)
                 and c is not TrainingMethod and c.__module__ == module.__name__]
        if not found:
            raise ConfigError(f"{where}: module {module_name!r} defines no subclass of "
                              f"rslib.training.base.TrainingMethod")
        if len(found) > 1:
            names = ", ".join(c.__name__ for c in found)
            raise ConfigError(f"{where}: module {module_name!r} defines {len(found)} TrainingMethod subclasses "
                              f"({names}); name one: '{module_name}:{found[0].__name__}'")
        cls = found[0]
    keys = cls.hparam_keys
    if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"{where}: {cls.__name__}.hparam_keys must be a tuple of strings, got {keys!r}")
    if cls.label is not None and not (isinstance(cls.label, str) and cls.label):
        raise ConfigError(f"{where}: {cls.__name__}.label must be a non-empty string or None, got {cls.label!r}")
    return cls


def source_digest(cls: type[Any]) -> str:
    """SHA-256 of the file that defines ``cls`` (``inspect.getsourcefile``), or "" for a class
    with no source file. The train rule's ``version`` and the training state's resume key carry
    it, so that editing that file retrains the method's models, from epoch 0. Files the module
    imports are not part of it (docs/methods.md, "Your own method")."""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # a built-in or a class of a module without a file
        path = None
    if path is None or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
