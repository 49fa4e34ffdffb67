"""The hyper-parameter names each training method reads (no torch here: the Snakefile checks the
configuration against them before any job runs, so a misspelt key is refused instead of its
default silently applying)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
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


def check_hparam_keys(method: str, hparams: Mapping[str, Any], where: str) -> None:
    """Refuse a key that ``method`` does not read, naming the closest valid key."""
    if method not in METHOD_KEYS:
        raise ConfigError(f"{where}: unknown training method {method!r}; known: {', '.join(sorted(METHOD_KEYS))}")
    valid = LOOP_KEYS + METHOD_KEYS[method]
    for key in hparams:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"
            raise ConfigError(f"{where}: {method} does not read hyper-parameter {key!r}{hint}")
