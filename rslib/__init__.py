"""rslib: randomized smoothing — certification, robust training and ensembles.

Reproduces Liu, Hoang, Nguyen & Weng, "Promoting Robustness of Randomized Smoothing:
Two Cost-Effective Approaches" (AdvMacer training, EsbRS ensembles) and its baselines.

Importing the package is cheap (no torch): the workflow imports :mod:`rslib.runtime.versions`
while Snakemake builds the DAG. Import the submodules you need, e.g.
``from rslib.certification.smooth import Smooth``.
"""

__version__ = "0.1.0"
