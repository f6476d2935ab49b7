"""``python -m ppl_vae`` runs the command line (see :mod:`ppl_vae.cli`)."""

import sys

from ppl_vae.cli import main

sys.exit(main())
