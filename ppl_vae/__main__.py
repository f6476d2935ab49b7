"""``python -m ppl_vae`` runs the command line (see :mod:`ppl_vae.cli`)."""

import sys

from ppl_vae.console import main

sys.exit(main())
