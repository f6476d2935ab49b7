"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM.

Inside :func:`stop_requests`, the first SIGINT or SIGTERM only records the request: the trainer finishes the step it is
in, writes the checkpoint (atomically: :mod:`ppl_vae.checkpoint`) and raises :class:`Interrupted`. A second SIGINT
raises ``KeyboardInterrupt`` at once, wherever the program is: a checkpoint being written then is abandoned and the
previous one stays as it was. Outside the block (or off the main thread, where Python delivers no signals) nothing
changes.

The command line turns :class:`Interrupted` into one line saying how to resume, and exit status ``128 + signal``
(130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):  # noqa: N818 (what happened, not an error of the program)
    """Training stopped at a signal after writing its checkpoint. ``signum``: the signal; ``epoch``, ``step``: where
    (the step in the epoch, from 1, that was finished last; 0 when the epoch had not started)."""

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum, self.epoch, self.step = signum, epoch, step
        name = signal.Signals(signum).name
        super().__init__(f"{name} at epoch {epoch}, step {step}: the checkpoint holds every finished step")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopRequest:
    """The signal received inside :func:`stop_requests` (``None``: none yet)."""

    def __init__(self):
        self.signum: int | None = None


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Record the first SIGINT or SIGTERM in the yielded :class:`StopRequest` instead of raising; a second SIGINT
    raises ``KeyboardInterrupt`` (a second SIGTERM is recorded again). The previous handlers come back on exit."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if request.signum is None:
            print(
                f"\n{signal.Signals(signum).name}: finishing the current step, then writing the checkpoint "
                "(Ctrl-C again stops at once)",
                file=sys.stderr,
            )
        request.signum = signum

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
