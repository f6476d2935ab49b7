"""``ppl-vae train --nproc N``: the same training, data-parallel in ``N`` processes, started by torch's own launcher.

It runs, as a child process::

    python -m ppl_vae.torchrun --standalone --nproc_per_node N -m ppl_vae train <the same flags, less --nproc>

(``torchrun`` itself, its failure report cut to one line: :mod:`ppl_vae.torchrun`; ``--standalone`` picks a free
local rendezvous), forwards SIGINT and SIGTERM to it (torchrun
passes them to every worker, which checkpoints and stops: see :mod:`ppl_vae.interrupt`), and exits with its status.
For several machines call ``torchrun`` directly (README: "More than one process").
"""

from __future__ import annotations

import signal
import subprocess
import sys

from ppl_vae.errors import InputError

MAX_PROCESSES = 1024
"""The most processes ``--nproc`` starts on one machine (more is a typo, not a plan)."""


def check_nproc(value) -> int:
    """``--nproc``'s value: an integer from 1 to :data:`MAX_PROCESSES`, or an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise InputError(f"--nproc must be an integer from 1 to {MAX_PROCESSES} (processes here), got {value!r}")
    return value


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (the workers are the processes)."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            kept.append(word)
    return kept


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command line that trains ``argv`` (``train ...``, without ``--nproc``) in ``nproc`` local processes."""
    launcher = [sys.executable, "-m", "ppl_vae.torchrun", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, "-m", "ppl_vae", *argv]


def launch(nproc: int, argv: list[str]) -> int:
    """Run :func:`torchrun_command` and return its exit status (``128 + signal`` if a signal ended it), forwarding
    SIGINT and SIGTERM. The child has its own session, so a Ctrl-C in the terminal reaches it once, through here."""
    child = subprocess.Popen(torchrun_command(check_nproc(nproc), without_nproc(argv)), start_new_session=True)

    def forward(signum, frame):
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - status if status < 0 else status
