"""The command line: ``python -m rslib certify …`` and ``python -m rslib analyze …`` (also
installed as ``rslib-certify`` and ``rslib-analyze``), in the convention of the reference
repositories' ``certify.py`` and ``analyze.py`` (Cohen et al. 2019, locuslab/smoothing).

Thin over rslib: :mod:`rslib.cli.main` dispatches, :mod:`rslib.cli.certify` parses the arguments and calls
:func:`rslib.certification.certify.run_certification`; :mod:`rslib.cli.analyze` calls
:func:`rslib.report.metrics.summarize` and :func:`rslib.report.metrics.bootstrap_intervals`.
Importing this package is cheap (no torch), so ``--help`` answers at once.

Errors caused by the input (:class:`rslib.runtime.errors.RslibError`, a bad argument, a file
that cannot be read or written) are printed as one ``error:`` line, exit status 1.
"""
