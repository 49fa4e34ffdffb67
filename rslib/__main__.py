"""``python -m rslib certify …`` / ``python -m rslib analyze …``: the command line (:mod:`rslib.cli`)."""

from rslib.cli.main import main

raise SystemExit(main())
