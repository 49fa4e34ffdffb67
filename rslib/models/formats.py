"""Names of the model-file formats and input layers, torch-free: the plan (parse time) and the
command line's ``--help`` read them; :mod:`rslib.models.released` reads the files."""

from __future__ import annotations

#: checkpoints of the reference repositories (Cohen et al.'s layout and its descendants, MACER's)
REFERENCE_FORMATS = ("cohen", "consistency", "macer", "smoothadv", "smoothmix")

#: formats of a network of any codebase: a TorchScript archive, or a state dict with its builder
GENERIC_FORMATS = ("torchscript", "state_dict")

#: every format a ``released:`` entry (and ``rslib certify --format``) may name
RELEASED_FORMATS = (*REFERENCE_FORMATS, *GENERIC_FORMATS)

#: input layers on a dataset's constants: (x − mean) / std, x − mean, or the pixels as they are
INPUT_LAYERS = ("normalize", "center", "none")
