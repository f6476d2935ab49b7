"""The machine a benchmark ran on, recorded beside its numbers: every benchmark's ``environment`` in its JSON result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pyro
import torch


def environment(device: str | torch.device) -> dict:
    """Versions (torch, Pyro, Python), the platform and CPU model, the cores and torch threads, the device with its
    GPU name (``None`` on the CPU), the GPUs visible, and the load average (1, 5, 15 minutes) at the call."""
    device = torch.device(device)
    return {
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "load_average": list(os.getloadavg()),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform.processor()`` says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(names, platform.processor())
