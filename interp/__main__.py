"""``python -m interp`` runs the command line (as ``torchrun -m interp extract ...`` does
on every rank)."""

import sys

from interp.cli import main

sys.exit(main())
