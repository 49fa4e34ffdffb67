"""The interface every training method implements: the paper's six (Gaussian, SmoothAdv, MACER,
AdvMacer, Consistency, SmoothMix) and a method of the user's own (config
``methods.<name>.module``, :mod:`rslib.training.user_methods`; docs/methods.md, "Your own method").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch

from rslib.runtime.errors import ConfigError
from rslib.training.hparams import LOOP_KEYS


class MethodHparams(Mapping[str, Any]):
    """A method's hyper-parameters as it reads them: the configured ``hparams`` merged at its σ,
    read-only, and only the keys the method declares (:data:`LOOP_KEYS` + its ``hparam_keys``).

    Reading a key the method does not declare raises :class:`ConfigError` (not ``KeyError``,
    which ``get`` would turn into a silent default): the declaration is what the workflow checks
    the configuration against before any job runs, so a key read but not declared could never be
    set. A key that is declared but not configured is absent: the method applies its default
    (:func:`hparam_value`)."""

    def __init__(self, values: Mapping[str, Any], declared: tuple[str, ...], method: str):
        self._values = dict(values)
        self._declared = frozenset(LOOP_KEYS + tuple(declared))
        self._method = method

    def _check(self, key: object) -> None:
        if key not in self._declared:
            raise ConfigError(f"training method {self._method!r} reads hyper-parameter {key!r}, which it does not "
                              f"declare: add it to the class's hparam_keys")

    def __getitem__(self, key: str) -> Any:
        self._check(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        self._check(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"MethodHparams({self._values!r})"


def hparam_value(hparams: Mapping[str, Any], key: str, method: str, default: Any = None) -> Any:
    """``hparams[key]``, else ``default``; a missing required key (``default`` None) is a one-line
    ConfigError."""
    if key in hparams and hparams[key] is not None:
        return hparams[key]
    if default is None:
        raise ConfigError(f"training method {method!r} needs hyper-parameter {key!r} (missing from its hparams)")
    return default


class TrainingMethod:
    """One training objective: what the shared loop (:func:`rslib.training.loop.train_loop`) calls
    once per optimiser step. The loop owns everything else: the optimiser (SGD, the lr schedule,
    momentum, weight decay), data order, augmentation, seeding, checkpoints, resume and SIGTERM.

    **Construction.** ``cls(sigma, hparams)`` once per training job (and once per timed setting of
    the cost estimate), before the first step. ``sigma`` is the noise level σ of the job;
    ``hparams`` the method's configured hyper-parameters with the per-σ overrides applied
    (``methods.<name>.<dataset>.hparams`` + ``by_sigma``), loop keys included. The base class keeps
    them as ``self.sigma`` (float) and ``self.hparams`` (:class:`MethodHparams`: read-only, only
    declared keys); a subclass that overrides ``__init__`` calls ``super().__init__(sigma,
    hparams)`` first and reads its settings there, so that a bad value fails before training
    starts (:func:`hparam_value` gives the one-line error of a missing required key; raise
    :class:`ConfigError` for a bad value).

    **Hyper-parameter keys.** ``hparam_keys`` declares, at class level, every key the method reads
    beyond the loop's (:data:`rslib.training.hparams.LOOP_KEYS`: epochs, batch_size, lr, …). The
    workflow refuses, before any job runs, a configured key outside ``LOOP_KEYS + hparam_keys``,
    naming the closest valid key. The paper's six methods point at their entry of the torch-free
    table :data:`rslib.training.hparams.METHOD_KEYS` (the Snakefile checks the paper's
    configuration without importing torch); a method of the user's own declares a tuple literal.

    **The step.** ``loss(model, x, y, epoch)`` with ``model`` in train mode, ``x`` a ``(B, C, H, W)``
    float batch of images in [0, 1] on the training device (augmented, not normalised: the model's
    first layer normalises, and noise is added to [0, 1] pixels, unclipped), ``y`` its ``(B,)``
    labels and ``epoch`` the 0-based epoch. Returns the scalar loss to minimise, or ``(loss,
    logits)`` where ``logits`` (``(B, classes)``: one row per image, e.g. of one noisy copy or the
    log of the copy-averaged softmax) feed the running train accuracy of the progress output. The loop then calls ``backward`` and the
    optimiser step. Before each call the global torch RNG is seeded from ``(seed, epoch, step)``,
    so noise drawn with ``torch.randn``/``randn_like`` (or :func:`rslib.training.copies.draw_noise`)
    is reproducible and a resumed run repeats it exactly. A method that attacks in eval mode or
    freezes parameters restores the model's modes and flags before it returns.

    **Noise copies.** A method that scores m noisy copies per image lays them out as
    :mod:`rslib.training.copies` does (the m copies of image i adjacent: rows i·m … i·m + m − 1;
    :func:`~rslib.training.copies.noisy_copies`, :func:`~rslib.training.copies.copy_labels`,
    :func:`~rslib.training.copies.mean_over_copies`).

    **State between steps.** The checkpoint after each epoch (and on SIGTERM) holds the model, the
    optimiser and the loop's counters, not the method object, which is built afresh on resume.
    Whatever a method keeps on ``self`` must therefore be a function of ``sigma``, ``hparams``
    (and of ``epoch``, passed to every call): settings parsed once, warm-up schedules computed
    from ``epoch``. State that accumulates over steps would differ after a resume.

    **Names.** The configuration's key names a method (``methods.<name>``, the ``method``
    wildcard, the model file's spec); ``name`` is that key for the paper's methods. ``label`` is
    how tables name a method of the user's own unless the configuration gives
    ``methods.<name>.label`` (default: the configuration's key); the paper's methods are named
    as the paper writes them (:data:`rslib.ensembles.schemes.METHOD_NAMES`).
    """

    name: ClassVar[str] = ""
    #: table label of a method of the user's own (config ``methods.<name>.label`` overrides it)
    label: ClassVar[str | None] = None
    #: hyper-parameters the method reads beyond the loop's (LOOP_KEYS)
    hparam_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, sigma: float, hparams: Mapping[str, Any]):
        self.sigma = float(sigma)
        self.hparams = MethodHparams(hparams, tuple(self.hparam_keys), self.name or type(self).__name__)

    def loss(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The mini-batch loss, or ``(loss, logits)`` where ``logits`` feed the running train
        accuracy in the progress output (see the class docstring)."""
        raise NotImplementedError
