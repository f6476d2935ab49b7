"""The ``ppl-vae`` console script and ``python -m ppl_vae``: :func:`ppl_vae.cli.main`, with a Ctrl-C that arrives while
torch, Pyro and ArviZ are still being imported (the first seconds) turned into the one line ``ppl-vae: interrupted``
and exit status 130, like one that arrives later, instead of a traceback from inside an import."""

import sys


def main() -> int:
    try:
        from ppl_vae.cli import main as run
    except KeyboardInterrupt:
        print("\nppl-vae: interrupted", file=sys.stderr)
        return 130
    return run()
