"""Ensembles of smoothed classifiers: named schemes (:mod:`.schemes`, torch-free), members'
stored outputs on the shared noise stream (:mod:`.outputs`), aggregation rules (:mod:`.rules`),
certification from stored outputs or directly (:mod:`.certify`), EsbRS weights (:mod:`.weights`,
``000`` Alg. 2) and SWEEN weights (:mod:`.sween`, ``002``)."""
