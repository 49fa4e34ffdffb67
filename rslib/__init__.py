"""rslib: randomized smoothing — certification, robust training and ensembles.

Reproduces Liu, Hoang, Nguyen & Weng, "Promoting Robustness of Randomized Smoothing:
Two Cost-Effective Approaches" (AdvMacer training, EsbRS ensembles) and its baselines.

Packages named for the workflow's stages: experiment (the plan, torch-free: all the Snakefile
imports while Snakemake builds the DAG), data, models, certification, training, ensembles,
report, costs, runtime, and cli (``python -m rslib certify|analyze``). Importing the package is
cheap (no torch); import the modules you need, e.g. ``from rslib.certification.smooth import Smooth``.
"""

__version__ = "0.1.0"
