"""``python -m edgespeak`` = the ``edgespeak`` command."""

from edgespeak.cli import main

raise SystemExit(main())
