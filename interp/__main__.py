"""``python -m interp`` runs the command line (as ``torchrun -m interp extract ...`` does
on every rank). The command line lives above every package (:mod:`analyses.cli`), so it
is found by name here rather than imported by this, the bottom package."""

import importlib
import sys

sys.exit(importlib.import_module("analyses.cli").main())
