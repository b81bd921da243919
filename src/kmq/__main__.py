"""``python -m kmq``: the same as the ``kmq`` command."""

from kmq.cli import main

raise SystemExit(main())
