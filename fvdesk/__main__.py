"""``python -m fvdesk`` runs the same entry point as the ``fvdesk`` script."""

import sys

from fvdesk.cli import main

sys.exit(main())
