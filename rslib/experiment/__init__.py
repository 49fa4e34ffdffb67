"""The experiment as configured, torch-free: what the Snakefile imports while it builds the DAG.

:mod:`.plan` computes, once, every model slot, ensemble, certification and cost job of a
validated configuration; :mod:`.paths` names every file under ``results/``; :mod:`.artefacts`
is the registry of the paper's tables and figures; :mod:`.comparability` says when a cell can be
compared with the paper; :mod:`.released_files` says where released files come from."""
