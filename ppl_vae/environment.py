"""What a run was computed with: package versions, Python, the git commit, the device and the threads.

``train_run`` writes :func:`environment` to ``environment.json`` in every run folder, so that a number in a table can be
traced to the software and machine that produced it::

    {"python": "3.11.9", "platform": "Linux-...", "packages": {"torch": "2.4.1", "pyro-ppl": "1.9.1", ...},
     "git_commit": "f374a71...", "git_dirty": false, "device": "cpu", "device_name": "cpu", "threads": 2}

``git_commit`` is the commit of the source tree ``ppl_vae`` was imported from (``null`` outside a git checkout, or
without ``git``); ``git_dirty`` says whether that tree had uncommitted changes.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

ENVIRONMENT_FILE = "environment.json"
PACKAGES = ("torch", "pyro-ppl", "arviz", "numpy", "ppl_vae")
"""The distributions whose versions are recorded (``null`` for one that is not installed)."""


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """``{distribution name: version}`` as installed, ``None`` for one that is not."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str) -> str | None:
    """The output of ``git args`` in the folder of this package, or ``None`` where git or a checkout is missing."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(device: str | torch.device = "cpu") -> dict:
    """The environment of a computation on ``device`` (see the module's docstring for the keys)."""
    device = torch.device(device)
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
    }
