"""``python -m edgespeak`` = the ``edgespeak`` command."""

from edgespeak.cli.main import main

raise SystemExit(main())
