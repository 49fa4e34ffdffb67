"""Names of the model-file formats and input layers, torch-free: the plan (parse time) and the
command line's ``--help`` read them; :mod:`rslib.models.released` reads the files."""

from __future__ import annotations

#: checkpoints of the reference repositories (Cohen et al.'s layout and its descendants, MACER's)
REFERENCE_FORMATS = ("cohen", "consistency", "macer", "smoothadv", "smoothmix")

#: formats of a network of any codebase: a TorchScript archive, a torch.export archive (.pt2), or a
#: state dict with its builder
GENERIC_FORMATS = ("torchscript", "exported", "state_dict")

#: "torchscript, exported and state_dict", for messages
GENERIC_FORMATS_TEXT = f"{', '.join(GENERIC_FORMATS[:-1])} and {GENERIC_FORMATS[-1]}"

#: every format a ``released:`` entry (and ``rslib certify --format``) may name
RELEASED_FORMATS = (*REFERENCE_FORMATS, *GENERIC_FORMATS)

#: input layers on a dataset's constants: (x − mean) / std, x − mean, or the pixels as they are
INPUT_LAYERS = ("normalize", "center", "none")
