"""Seeded Gaussian noise streams: the noise for image ``i`` is a pure function of
``(seed, i, phase)``.

Randomized smoothing (Cohen et al. 2019, Sec. 3.2) evaluates the base classifier on
``x + N(0, σ²I)`` samples. For reproducibility across shards, ensemble members and reruns
(SPEC "Performance"), the k-th noise sample of image i in a given phase must not depend on
how the work is split into batches, shards or jobs. We therefore cut each stream into fixed
blocks of :data:`BLOCK` samples and seed a generator per block from
``(seed, image index, phase, block index)`` with a SplitMix64 mixer. Any batch is assembled
from whole blocks, so every batch size yields the same samples.

The values are identical on every CPU; on a GPU they come from the CUDA generator and are
identical across runs on that device type, but differ from the CPU values.
"""

from __future__ import annotations

import torch

#: Samples per independently seeded block. ``n0 = 100`` (Cohen et al.) is exactly one block.
BLOCK = 100


#: Phases of one image's stream; each has its own independent samples.
PHASES: dict[str, int] = {
    "selection": 1,  # CERTIFY's n0 samples that pick the top class
    "estimation": 2,  # CERTIFY's n independent samples that bound p_A
    "predict": 3,  # PREDICT's samples
    "outputs": 4,  # stored per-sample member outputs for ensembles
    "weights": 5,  # EsbRS Alg. 2's n noisy inputs for per-point optimal weights
    "import_check": 6,  # the one draw per image of rslib.certification.plausibility's check
}


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Combine integers into one 63-bit seed (order-sensitive, well mixed)."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h & ((1 << 63) - 1)


def phase_code(phase: str) -> int:
    try:
        return PHASES[phase]
    except KeyError:
        raise ValueError(f"unknown noise phase {phase!r}; known: {', '.join(PHASES)}") from None


class NoiseStream:
    """Standard-normal noise addressed by (image index, phase, sample range).

    ``sample(index, phase, start, count, shape)`` returns ``count`` noise tensors of
    ``shape`` (unscaled, N(0, 1)) for samples ``start .. start+count-1`` of that image's
    phase stream, on ``device``. ``start`` must be a multiple of :data:`BLOCK`.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dtype = dtype
        self._generator = torch.Generator(device=self.device)

    def block_seed(self, index: int, phase: str, block: int) -> int:
        return mix_seed(self.seed, index, phase_code(phase), block)

    def sample(
        self,
        index: int,
        phase: str,
        start: int,
        count: int,
        shape: tuple[int, ...] | torch.Size,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Samples ``start … start+count−1`` of image ``index``'s ``phase`` stream.

        ``out``: a contiguous tensor of shape ``(count, *shape)`` with this stream's device and dtype
        to fill instead of allocating one (the certification loop reuses one buffer per call).
        Whole blocks are drawn straight into it (``normal_`` is what ``torch.randn`` runs on a
        fresh tensor, so the values are the same); only a partial last block goes through a
        temporary block, because its first ``take`` values are those of a full ``BLOCK`` draw.
        """
        if start % BLOCK:
            raise ValueError(f"noise sample ranges must start at a multiple of {BLOCK}, got {start}")
        shape = tuple(shape)
        if out is None:
            out = torch.empty((count, *shape), device=self.device, dtype=self.dtype)
        elif (tuple(out.shape) != (count, *shape) or not _same_device(out.device, self.device)
              or out.dtype != self.dtype or not out.is_contiguous()):
            raise ValueError(
                f"out must be a contiguous {self.dtype} tensor of shape {(count, *shape)} on {self.device} "
                f"(got {out.dtype} {tuple(out.shape)} on {out.device})"
            )
        first_block = start // BLOCK
        for offset in range(0, count, BLOCK):
            take = min(BLOCK, count - offset)
            self._generator.manual_seed(self.block_seed(index, phase, first_block + offset // BLOCK))
            if take == BLOCK:
                out[offset : offset + BLOCK].normal_(generator=self._generator)
            else:
                block = torch.randn((BLOCK, *shape), generator=self._generator, device=self.device, dtype=self.dtype)
                out[offset : offset + take] = block[:take]
        return out


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``"cuda"`` and ``"cuda:0"`` (the device a tensor made on ``"cuda"`` reports) are one device."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def round_batch_size(batch_size: int) -> int:
    """Largest multiple of :data:`BLOCK` not above ``batch_size`` (at least one block)."""
    return max(BLOCK, (int(batch_size) // BLOCK) * BLOCK)
