"""The hyper-parameter names each training method reads, torch-free: the Snakefile checks the
configuration against them before any job runs, so a misspelt key is refused instead of its
default silently applying.

:data:`METHOD_KEYS` is the declaration of the paper's six methods: each class's ``hparam_keys``
(:class:`rslib.training.base.TrainingMethod`) is its entry here, and the class reads no other key
(:class:`rslib.training.base.MethodHparams`). A method of the user's own declares its keys on
its class, which the workflow imports to read them (:mod:`rslib.training.user_methods`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from rslib.runtime.errors import ConfigError

#: read by the shared training loop (optimiser, schedule, augmentation) for every method
LOOP_KEYS: tuple[str, ...] = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_milestones", "lr_gamma",
                              "augment")


_ATTACK = ("num_noise_vec", "attack_steps", "epsilon", "warmup_epochs")


_MACER = ("num_noise_vec", "gamma", "beta", "lbd", "lbd_zero_until_first_decay")


#: per method (the ``method`` wildcard), the keys its objective reads beyond the loop's
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "gaussian": (),
    "smoothadv": _ATTACK,
    "macer": _MACER,
    "advmacer": _ATTACK + ("gamma", "beta", "lbd", "lbd_zero_until_first_decay"),
    "consistency": ("num_noise_vec", "lbd", "eta"),
    "smoothmix": ("num_noise_vec", "num_steps", "eta", "alpha", "mix_step", "warmup", "maxnorm", "maxnorm_s"),
}


def check_hparam_keys(method: str, hparams: Mapping[str, Any], where: str,
                      method_keys: Sequence[str] | None = None) -> None:
    """Refuse a key that ``method`` does not read, naming the closest valid key. ``method_keys``:
    the keys it reads beyond the loop's (its class's ``hparam_keys``); by default the paper's
    method's entry of :data:`METHOD_KEYS`."""
    if method_keys is None:
        if method not in METHOD_KEYS:
            raise ConfigError(f"{where}: unknown training method {method!r}; known: {', '.join(sorted(METHOD_KEYS))}")
        method_keys = METHOD_KEYS[method]
    valid = LOOP_KEYS + tuple(method_keys)
    for key in hparams:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"
            raise ConfigError(f"{where}: {method} does not read hyper-parameter {key!r}{hint}")
