"""``python -m skyscore`` is the CLI."""

from skyscore.cli import main

raise SystemExit(main())
