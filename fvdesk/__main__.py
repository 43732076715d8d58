"""``python -m fvdesk`` runs the same entry point as the ``fvdesk`` script."""

import multiprocessing
import sys

from fvdesk.cli import main

# a frozen app's decode workers start this same executable: let them run their task, not the app
multiprocessing.freeze_support()
sys.exit(main())
