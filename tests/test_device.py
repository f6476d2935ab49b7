"""Every tensor follows the run's device: a short train, evaluation and report watched by a TorchFunctionMode.

No GPU here, so the check that bites on the CPU is the one that finds a CPU tensor in waiting: a tensor factory
(``torch.zeros``, ``torch.randn``, ``torch.tensor``, ...) called from the project's code without ``device=`` makes a
CPU tensor whatever ``--device`` says (a host-to-device copy, or a device mismatch, on a GPU). Factories inside an
``nn.Module``'s ``__init__`` are exempt: parameters and buffers are made there and move with the module. The mode also
records every operation whose tensors (or generator) sit on more than one device, which on the CPU cannot happen and
on a GPU machine (the ``cuda`` case runs where one is present) finds every mix. Moving results off the device for
plots and JSON (``.cpu()``, ``.numpy()``) is left to review: it belongs at the end, in plots.py and the report.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import ppl_vae
from ppl_vae.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from ppl_vae.report import ReportConfig
from ppl_vae.run import evaluate_run, model_config_for, train_run

PROJECT = str(Path(ppl_vae.__file__).resolve().parent)
TORCH = str(Path(torch.__file__).resolve().parent)
FACTORIES = {
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.randn,
    torch.rand,
    torch.randint,
    torch.randperm,
    torch.arange,
    torch.linspace,
    torch.eye,
    torch.tensor,
}


def project_caller() -> str | None:
    """``file:line`` of the project's code that called the current torch function (the first frame outside torch),
    or ``None`` when that frame is not the project's (Pyro's, the test's) or the call is part of building a module."""
    frame, caller = sys._getframe(2), None
    while frame is not None:
        name = frame.f_code.co_filename
        if caller is None and not name.startswith(TORCH):
            if not name.startswith(PROJECT):
                return None
            caller = f"{Path(name).name}:{frame.f_lineno}"
        if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), nn.Module):
            return None
        frame = frame.f_back
    return caller


class DeviceAudit(TorchFunctionMode):
    """Records factories without ``device=`` called from the project, and operations across devices."""

    def __init__(self):
        super().__init__()
        self.factories: set[str] = set()
        self.mixed: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            where = project_caller()
            if where is not None:
                self.factories.add(f"{where} {func.__name__}")
        devices = {t.device for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.dim() > 0}
        if isinstance(kwargs.get("generator"), torch.Generator):
            devices.add(kwargs["generator"].device)
        if len(devices) > 1:
            self.mixed.add(f"{project_caller() or 'outside the project'} {getattr(func, '__name__', func)} {devices}")
        return func(*args, **kwargs)


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_train_evaluate_and_report_keep_every_tensor_on_the_device(tmp_path, digits, device):
    model = model_config_for(digits, z_dim=2, hidden=(16,))
    train = TrainConfig(epochs=1, batch_size=256, device=device, eval_particles=2)
    config = RunConfig(
        model=model, data=DataConfig(name="digits"), train=train, evaluation=EvalConfig(k=8, num_particles=2)
    )
    audit = DeviceAudit()
    with audit:
        train_run(config, tmp_path / "run", progress=False)
        report = ReportConfig(gap_examples=1, gap_steps=2, draws=100)
        evaluate_run(tmp_path / "run", EvalConfig(k=100, num_particles=2, memory_mb=1.0), device=device, report=report)
    assert not audit.mixed, sorted(audit.mixed)
    assert not audit.factories, sorted(audit.factories)
