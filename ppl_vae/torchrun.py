"""What ``ppl-vae train --nproc N`` runs as its child process (:mod:`ppl_vae.launch`): torch's own launcher, torchrun
(``torch.distributed.run.main``), with its report of a failed worker cut to one line.

torchrun ends a run whose worker failed by raising ``ChildFailedError``, which Python prints as a traceback with a
framed table after the worker's own one-line error; a signal that stops the run ends it with ``SignalException``.
Here either becomes one line (or none: a stopped worker has said why) and the exit status a shell expects: the first
failed worker's status, or 128 + the signal::

    python -m ppl_vae.torchrun --standalone --nproc_per_node 2 -m ppl_vae train --epochs 30
"""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun


def main(argv: list[str]) -> int:
    """Run torchrun with ``argv``; its exit status (see the module's docstring)."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its "failed (exitcode ...)" line
    try:
        torchrun(argv)
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        status = failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode  # -9: killed by SIGKILL
        print(f"ppl-vae: rank {rank} stopped with exit status {status} (its message is above)", file=sys.stderr)
        return status
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
