"""What a user pays for training the VAE with ppl_vae, against the plain torch loop written by hand.

    PYTHONPATH=. python benchmarks/epoch_speed.py --threads 1 --out results.json
    PYTHONPATH=. python benchmarks/epoch_speed.py --quick --out quick.json          # the target rows, a few minutes
    PYTHONPATH=. python benchmarks/epoch_speed.py --device cuda --configurations mlp-784-400-50-b128

**The baseline** is the loop a user writes from the classic recipe, outside the project's machinery, in this file as
plain code: ``nn.Linear`` layers (``nn.Conv2d`` for the conv net) of the same architecture, loaded with the VAE's
initial weights; ``torch.randn`` noise, ``z = loc + exp(log_scale) * eps``; BCE-with-logits for log p(x | z); one
``torch.optim.Adam`` over all parameters; each epoch a ``torch.randperm`` of the training set sliced into minibatches,
binarized afresh with ``torch.bernoulli``, and ``loss.item()`` summed per step. Two baselines, one per estimator:

    plain-mc         KL by Monte Carlo: log N(z; 0, I) - log N(z; loc, scale) at the sampled z (as Pyro's Trace_ELBO)
    plain-analytic   the closed form 0.5 * sum(loc^2 + scale^2 - 1 - 2 log scale) (the classic recipe, written for the
                     VAE's log-scale head: log_var = 2 log_scale)

``meanfield`` and ``reference-analytic`` are compared with ``plain-analytic``, every other objective with
``plain-mc``. With the same seed, ``plain-mc`` and ``reference-mc`` compute the same first loss (the smoke test
checks it), so the baseline is the same computation, not a different one.

**The measured path** is ``ppl-vae train``'s: each objective's step from :func:`ppl_vae.objectives.make_step` on the
default path (``--path auto``: the compiled tier for ``trace``, ``stl`` and ``iwae``, the fast path for the other Pyro
objectives), as ``OBJECTIVE@fast`` on the fast path (``--path fast``) and as ``OBJECTIVE@plain`` on the plain SVI
path (``--path plain``), driven
by the epoch function that :func:`ppl_vae.fit` runs (``ppl_vae.train._train_epoch``, with fit's guarded first update,
seeded generator, shuffling, slicing and binarization; no progress bar, no evaluation between epochs).

**Taking turns**: every runner of a configuration is built first and warmed up (``--warmup`` epochs; the ``jit`` step
compiles there); then in each of ``--rounds`` rounds every runner runs one full epoch (data path included), and then
``--steps`` steps on one fixed binarized minibatch (the step alone), in a rotating order, so that a change in machine
load hits them alike. Reported: the median over rounds of the seconds per epoch, the milliseconds per step (step
alone), images per second (training examples per epoch second), and each as a ratio to the runner's baseline.

**Peak memory** of a runner while it is built, warmed up and runs one more epoch, above what was in use before (the
data set on the device excluded), runners one after the other (the baselines first): on CUDA,
``torch.cuda.max_memory_allocated``; on the CPU (Linux), in a fresh subprocess per configuration, the peak resident
set size (``VmHWM``) above the resident size before (``VmRSS``), after freed heap memory is returned to the system
(``malloc_trim``) and the peak reset (``/proc/self/clear_refs``). It counts every allocation (torch's, Python's, a
compiled graph's). ``resource.getrusage``'s ``ru_maxrss`` cannot be reset: the peak of loading the data hid every
runner's (0 MB). ``--memory none`` skips it.

**Configurations** (``--configurations``, comma-separated; ``digits28`` is the bundled digits resized to 28x28 as
``examples/digits_to_npz.py`` writes them, 1,497 training images):

    mlp-64-128-8-b64       digits 8x8, MLP 64-128-8, batch 64
    mlp-784-400-50-b128    digits28, MLP 784-400-50, batch 128
    conv-b64               digits 8x8, --net conv (two stride-2 convolutions, then 128), z_dim 8, batch 64
    mlp-784-400-50-b1024   digits28, MLP 784-400-50, batch 1024 (two steps per epoch, the second of 473 images;
                           ``jit`` drops that short batch, as ``ppl-vae train`` does)

**Evaluation** is not measured here: ``benchmarks/eval_speed.py`` times :func:`ppl_vae.iwae_log_likelihood` against
a hand-written vectorized IWAE.

Output: Markdown tables on stdout and, with ``--out``, a JSON file with every number and the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import importlib.util
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from machine import environment
from torch import nn

import ppl_vae
from ppl_vae.interrupt import StopRequest
from ppl_vae.nets import CONV_CHANNELS
from ppl_vae.objectives import make_step
from ppl_vae.programs import as_user_program
from ppl_vae.tables import table
from ppl_vae.train import _EpochState, _guarded_first_step, _Run, _train_epoch, seed_everything

LOG_2PI = math.log(2 * math.pi)
PATHS = ("fast", "plain")
"""``OBJECTIVE@fast``, ``OBJECTIVE@plain``: the objective on the fast path (``--path fast``) or the plain SVI path
(``--path plain``); ``OBJECTIVE`` alone takes ``ppl-vae train``'s default path (``auto``: the compiled tier where it
applies, else the fast path)."""
PYRO_OBJECTIVES = ("trace", "meanfield", "jit", "tracegraph", "iwae", "stl")
COMPILED = ("trace", "iwae", "stl")  # the default path is the compiled tier: their fast path gets its own row
OBJECTIVES = (
    *(
        name
        for objective in PYRO_OBJECTIVES
        for name in (objective, *(f"{objective}@{path}" for path in PATHS if objective in COMPILED or path != "fast"))
    ),
    "reference-mc",
    "reference-analytic",
    "reference-stl",
)
ANALYTIC = ("meanfield", "reference-analytic")  # compared with plain-analytic; the others with plain-mc
BASELINES = ("plain-mc", "plain-analytic")


@dataclasses.dataclass(frozen=True)
class Configuration:
    data: str  # "digits" or "digits28"
    net: str
    hidden: tuple[int, ...]
    z_dim: int
    batch_size: int


CONFIGURATIONS = {
    "mlp-64-128-8-b64": Configuration("digits", "mlp", (128,), 8, 64),
    "mlp-784-400-50-b128": Configuration("digits28", "mlp", (400,), 50, 128),
    "conv-b64": Configuration("digits", "conv", (128,), 8, 64),
    "mlp-784-400-50-b1024": Configuration("digits28", "mlp", (400,), 50, 1024),
}


def baseline_of(runner: str) -> str:
    """The plain loop a runner is compared with: the same estimator of the KL term."""
    if runner in BASELINES:
        return runner
    return "plain-analytic" if split_runner(runner)[0] in ANALYTIC else "plain-mc"


def split_runner(name: str) -> tuple[str, str]:
    """``OBJECTIVE@PATH`` -> ``(OBJECTIVE, PATH)``; ``OBJECTIVE`` -> ``(OBJECTIVE, "auto")``."""
    objective, _, path = name.partition("@")
    return objective, path or "auto"


# --- data ----------------------------------------------------------------------------------------------------------
def load_data(name: str, train_examples: int | None) -> ppl_vae.Dataset:
    """The digits (``digits``) or the digits resized to 28x28 (``digits28``, written and read back as the README
    does with ``examples/digits_to_npz.py``), the training set cut to its first ``train_examples`` images."""
    if name == "digits":
        data = ppl_vae.load_dataset("digits")
    else:
        spec = importlib.util.spec_from_file_location(
            "digits_to_npz", Path(__file__).resolve().parent.parent / "examples" / "digits_to_npz.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
            path = str(Path(folder) / "digits28.npz")
            module.main(["--size", "28", "--out", path])
            data = ppl_vae.load_dataset(path)
    if train_examples is not None:
        data = dataclasses.replace(data, x_train=data.x_train[:train_examples], y_train=data.y_train[:train_examples])
    return data


@dataclasses.dataclass
class Setup:
    """One configuration, ready to build runners: the data on the device and the VAE's initial weights."""

    name: str
    configuration: Configuration
    data: ppl_vae.Dataset
    model_config: ppl_vae.ModelConfig
    initial_weights: dict
    x_train: torch.Tensor
    device: torch.device
    seed: int

    @classmethod
    def create(cls, name: str, data: ppl_vae.Dataset, device: torch.device, seed: int) -> Setup:
        configuration = CONFIGURATIONS[name]
        model_config = ppl_vae.model_config_for(
            data, z_dim=configuration.z_dim, hidden=configuration.hidden, net=configuration.net
        )
        seed_everything(seed)
        weights = {key: value.clone() for key, value in ppl_vae.VAE(model_config).state_dict().items()}
        return cls(name, configuration, data, model_config, weights, data.x_train.to(device), device, seed)

    def fixed_batch(self) -> torch.Tensor:
        """The first ``batch_size`` training images, binarized once: the minibatch of the step-alone timings."""
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        return torch.bernoulli(self.x_train[: self.configuration.batch_size], generator=generator)


# --- the plain hand-written loop: torch only (Setup hands it the data and the initial weights) ---------------------
def plain_networks(setup: Setup) -> tuple[nn.Module, nn.Module]:
    """Encoder ``x (B, D) -> [loc | log_scale] (B, 2 z_dim)`` and decoder ``z (B, z_dim) -> logits (B, D)`` as a user
    writes them, with the VAE's initial weights copied across (parameter by parameter, in order; shapes checked)."""
    configuration, (channels, height, width) = setup.configuration, setup.data.image_shape
    x_dim, z_dim, hidden = setup.data.x_dim, configuration.z_dim, list(configuration.hidden)

    def dense(widths: list[int]) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        return layers[:-1]  # the last layer is linear

    if configuration.net == "mlp":
        encoder = nn.Sequential(*dense([x_dim, *hidden, 2 * z_dim]))
        decoder = nn.Sequential(*dense([z_dim, *hidden[::-1], x_dim]))
    else:
        first, second = CONV_CHANNELS
        small = (((height + 1) // 2 + 1) // 2, ((width + 1) // 2 + 1) // 2)
        encoder = nn.Sequential(
            nn.Unflatten(1, (channels, height, width)),
            nn.Conv2d(channels, first, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            *dense([second * small[0] * small[1], *hidden, 2 * z_dim]),
        )
        decoder = nn.Sequential(
            *dense([z_dim, *hidden[::-1], second * small[0] * small[1]]),
            nn.Unflatten(1, (second, *small)),
            nn.ReLU(),
            nn.ConvTranspose2d(second, first, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(first, channels, 3, stride=2, padding=1, output_padding=1),
            CropFlatten(height, width),
        )
    for network, prefix in ((encoder, "encoder.net."), (decoder, "decoder.")):
        source = [value for key, value in setup.initial_weights.items() if key.startswith(prefix)]
        target = network.state_dict()
        shapes = [tuple(value.shape) for value in source], [tuple(value.shape) for value in target.values()]
        if shapes[0] != shapes[1]:
            raise RuntimeError(f"the plain {prefix[:-1]} does not match the VAE's: {shapes[1]} vs {shapes[0]}")
        network.load_state_dict(dict(zip(target, source, strict=True)))
    return encoder.to(setup.device), decoder.to(setup.device)


class CropFlatten(nn.Module):
    """``(B, C, H', W') -> (B, C*H*W)``: the transposed convolutions' output cropped to ``(H, W)``, flattened."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[..., : self.height, : self.width].flatten(1)


def log_normal(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``sum_j log N(z_j; loc_j, scale_j)`` over the last dimension."""
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


class PlainLoop:
    """The hand-written training loop (see the module docstring): ``analytic`` selects the closed-form KL."""

    def __init__(self, setup: Setup, analytic: bool, lr: float = 1e-3):
        self.encoder, self.decoder = plain_networks(setup)
        self.analytic = analytic
        self.optimizer = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=lr)
        self.x_train, self.batch_size = setup.x_train, setup.configuration.batch_size
        self.generator = torch.Generator(device=setup.device).manual_seed(setup.seed)
        torch.manual_seed(setup.seed)  # the noise starts where ppl-vae train's does (pyro.set_rng_seed)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO summed over the minibatch ``x`` ``(B, D)``, nats."""
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        scale = torch.exp(log_scale)
        z = loc + scale * torch.randn(loc.shape, device=loc.device)
        reconstruction = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        if self.analytic:
            kl = 0.5 * (loc**2 + scale**2 - 1.0 - 2.0 * log_scale).sum()
        else:
            kl = (log_normal(z, loc, scale) - log_normal(z, torch.zeros_like(z), torch.ones_like(z))).sum()
        return reconstruction + kl

    def step(self, x: torch.Tensor) -> float:
        loss = self.loss(x)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def epoch(self) -> float:
        """One pass over the shuffled training set; returns the summed loss, nats."""
        total, size = 0.0, self.x_train.shape[0]
        order = torch.randperm(size, generator=self.generator, device=self.generator.device).to(self.x_train.device)
        for start in range(0, size, self.batch_size):
            x = torch.bernoulli(self.x_train[order[start : start + self.batch_size]], generator=self.generator)
            total += self.step(x)
        return total


# --- ppl-vae train's path -----------------------------------------------------------------------------------------
class ProjectRunner:
    """``ppl-vae train --elbo OBJECTIVE``'s epoch (``--path PATH`` for ``OBJECTIVE@PATH``): the step
    :func:`make_step` builds, run by fit's epoch function."""

    def __init__(self, setup: Setup, name: str):
        self.vae = ppl_vae.VAE(setup.model_config).to(setup.device)
        self.vae.load_state_dict(setup.initial_weights)
        objective, path = split_runner(name)
        self.config = ppl_vae.TrainConfig(
            batch_size=setup.configuration.batch_size,
            elbo=objective,
            seed=setup.seed,
            device=str(setup.device),
            path=path,
        )
        self.programs = as_user_program(self.vae)
        self.x_train = setup.x_train
        seed_everything(setup.seed)  # as fit does, after the VAE is built
        self.generator = torch.Generator(device=setup.device).manual_seed(setup.seed)
        self.training_step = make_step(self.programs, self.config)
        self.update = _guarded_first_step(self.programs, self.config)

    def step(self, x: torch.Tensor) -> float:
        return self.training_step(x)

    def epoch(self) -> float:
        run = _Run(self.programs, self.training_step, self.generator, self.config, None, {}, None, [])
        num_examples = self.x_train.shape[0]
        state = _EpochState.start(
            1, num_examples, self.config.batch_size, self.generator, self.training_step.fixed_batch_shape
        )
        _train_epoch(run, self.update, state, self.x_train, (), False, StopRequest())
        return state.total * num_examples / state.seen


def build_runner(setup: Setup, name: str):
    return PlainLoop(setup, analytic=name == "plain-analytic") if name in BASELINES else ProjectRunner(setup, name)


def counted_epoch(runner) -> tuple[int, int]:
    """Run one epoch, counting its steps and the images they took (only in the warm-up: the timed epochs call the
    step itself)."""
    attribute = "step" if isinstance(runner, PlainLoop) else "training_step"
    counting = Counting(getattr(runner, attribute))
    setattr(runner, attribute, counting)
    runner.epoch()
    setattr(runner, attribute, counting.step)
    return len(counting.sizes), sum(counting.sizes)


class Counting:
    """A step that records the size of each minibatch it is called with; other attributes are the step's."""

    def __init__(self, step):
        self.step, self.sizes = step, []

    def __getattr__(self, name: str):
        return getattr(self.step, name)

    def __call__(self, x: torch.Tensor, *args, **kwargs):
        self.sizes.append(x.shape[0])
        return self.step(x, *args, **kwargs)


# --- timing ---------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def time_configuration(setup: Setup, runners: list[str], args) -> dict:
    """Build and warm up every runner, then take turns: per round one epoch each, then ``args.steps`` steps each."""
    built, counts = {}, {}
    for name in runners:
        built[name] = build_runner(setup, name)
        counts[name] = counted_epoch(built[name])
        for _ in range(args.warmup - 1):
            built[name].epoch()
    x = setup.fixed_batch()
    epoch_s = {name: [] for name in runners}
    step_ms = {name: [] for name in runners}
    for number in range(args.rounds):
        order = runners[number % len(runners) :] + runners[: number % len(runners)]
        for name in order:
            epoch_s[name].append(timed(built[name].epoch, setup.device))
        for name in order:

            def steps(runner=built[name]):
                for _ in range(args.steps):
                    runner.step(x)

            step_ms[name].append(timed(steps, setup.device) / args.steps * 1e3)
    rows = {}
    for name in runners:
        rows[name] = {
            "baseline": baseline_of(name),
            "steps_per_epoch": counts[name][0],
            "epoch_seconds": statistics.median(epoch_s[name]),
            "ms_per_step": statistics.median(step_ms[name]),
            "epoch_rounds_seconds": epoch_s[name],
            "step_rounds_ms": step_ms[name],
        }
        rows[name]["images_per_second"] = counts[name][1] / rows[name]["epoch_seconds"]
    for row in rows.values():
        base = rows.get(row["baseline"])
        for key in ("epoch_seconds", "ms_per_step"):
            row[f"{key}_ratio"] = row[key] / base[key] if base else None
    return rows


# --- peak memory ------------------------------------------------------------------------------------------------------
def peak_memory_mb(setup: Setup, name: str, warmup: int) -> float:
    """Peak memory growth while ``name`` is built, warmed up and runs one more epoch, MB (10^6 bytes), in this
    process: ``torch.cuda.max_memory_allocated`` above the allocation before on CUDA; on the CPU (Linux) the peak
    resident set size ``VmHWM`` above ``VmRSS`` before, after returning freed heap memory to the system
    (``malloc_trim``) and resetting the peak (``/proc/self/clear_refs``)."""
    gc.collect()
    if setup.device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_kib("VmRSS") * 1024
    runner = build_runner(setup, name)
    for _ in range(warmup + 1):
        runner.epoch()
    synchronize(setup.device)
    if setup.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(setup.device)
    else:
        peak = _status_kib("VmHWM") * 1024
    del runner
    pyro.clear_param_store()  # the VAE's parameters leave with it
    return (peak - before) / 1e6


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``: resident now; ``VmHWM``: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: peak memory on the CPU needs Linux (or --memory none)")


def memory_of(setup: Setup, runners: list[str], warmup: int) -> dict[str, float]:
    """:func:`peak_memory_mb` of each runner in turn, after one discarded measurement: the first runner of a process
    pays one-off allocations (the autograd engine, math-library buffers; 160 MB on the CPU) that are no runner's."""
    peak_memory_mb(setup, runners[0], warmup)
    return {name: peak_memory_mb(setup, name, warmup) for name in runners}


def measure_memory(setup: Setup, runners: list[str], argv: list[str], args) -> dict[str, float]:
    """Peak memory of each runner, one after the other (the baselines first): in this process on CUDA; on the CPU
    in a fresh subprocess for the configuration, so that this process's history does not hide a peak."""
    if setup.device.type == "cuda":
        return memory_of(setup, runners, args.warmup)
    package_root = str(Path(ppl_vae.__file__).resolve().parent.parent)  # the child imports this same ppl_vae
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    objectives = ",".join(name for name in runners if name not in BASELINES)  # the child measures the baselines too
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--objectives", objectives]
    command += ["--probe-memory", setup.name]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"memory probe of {setup.name} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- report -------------------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = []
    for name, configuration in result["configurations"].items():
        lines += [f"\n{name} ({configuration['description']})\n"]
        header = ["runner", "baseline", "ms per step", "ratio", "s per epoch", "ratio", "images per s", "peak MB"]
        rows = []
        for runner, row in configuration["rows"].items():
            rows.append(
                [
                    f"`{runner}`",
                    "-" if row["baseline"] == runner else f"`{row['baseline']}`",
                    f"{row['ms_per_step']:.2f}",
                    _ratio(row["ms_per_step_ratio"]),
                    f"{row['epoch_seconds']:.4f}",
                    _ratio(row["epoch_seconds_ratio"]),
                    f"{row['images_per_second']:.0f}",
                    "-" if row.get("peak_memory_mb") is None else f"{row['peak_memory_mb']:.1f}",
                ]
            )
        lines.append(table(header, rows, align="llrrrrrr"))
    env = result["environment"]
    lines.append(
        f"\ntorch {env['torch']}, pyro {env['pyro']}, {env['device']} ({env['gpu'] or env['cpu']}), "
        f"{env['threads']} thread(s), load average {' '.join(f'{v:.2f}' for v in env['load_average'])} at the start"
    )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def describe(name: str, data: ppl_vae.Dataset) -> str:
    configuration = CONFIGURATIONS[name]
    widths = "-".join(str(width) for width in (data.x_dim, *configuration.hidden, configuration.z_dim))
    return (
        f"{configuration.data}, --net {configuration.net} {widths}, batch {configuration.batch_size}, "
        f"{len(data.x_train)} training images"
    )


QUICK = {
    "configurations": "mlp-64-128-8-b64,mlp-784-400-50-b128",
    "objectives": "trace,trace@fast,trace@plain,jit,iwae,iwae@fast,iwae@plain,reference-mc",
    "rounds": 5,
    "warmup": 1,
}
"""``--quick``: the two target configurations, the default (compiled), fast and plain paths of ``trace`` and ``iwae``,
``jit`` and the hand-written step; 5 rounds."""


def _describe_quick() -> str:
    return ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in QUICK.items())


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS), help="comma-separated names")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated objective names")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2, help="epochs per runner before timing (at least 1)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round on the fixed minibatch")
    parser.add_argument("--train-examples", type=int, default=None, help="cut the training set (for quick runs)")
    parser.add_argument("--memory", choices=["auto", "none"], default="auto", help="measure peak memory, or not")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    parser.add_argument("--quick", action="store_true", help="defaults for a short run: " + _describe_quick())
    parser.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)  # a configuration, internal
    args = parser.parse_args(argv)
    if args.quick:  # the quick run's values, unless given on the command line
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    args.configurations = [name.strip() for name in args.configurations.split(",") if name.strip()]
    args.objectives = [name.strip() for name in args.objectives.split(",") if name.strip()]
    for name in args.configurations:
        if name not in CONFIGURATIONS:
            parser.error(f"unknown configuration {name!r}: expected one of {', '.join(CONFIGURATIONS)}")
    if args.warmup < 1 or args.rounds < 1 or args.steps < 1:
        parser.error("--warmup, --rounds and --steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_sets: dict[str, ppl_vae.Dataset] = {}

    def setup_of(name: str) -> Setup:
        source = CONFIGURATIONS[name].data
        if source not in data_sets:
            data_sets[source] = load_data(source, args.train_examples)
        return Setup.create(name, data_sets[source], device, args.seed)

    runners = [*BASELINES, *args.objectives]
    if args.probe_memory:  # the child of measure_memory: every runner of one configuration, in turn
        setup = setup_of(args.probe_memory)
        print(json.dumps(memory_of(setup, runners, args.warmup)))
        return {}

    result = {"environment": environment(device), "settings": _settings(args), "configurations": {}}
    for name in args.configurations:
        setup = setup_of(name)
        rows = time_configuration(setup, runners, args)
        if args.memory != "none":
            memory = measure_memory(setup, runners, argv, args)
            for runner, row in rows.items():
                row["peak_memory_mb"] = memory[runner]
                base = memory[row["baseline"]]
                row["peak_memory_ratio"] = memory[runner] / base if base > 0 else None
        result["configurations"][name] = {"description": describe(name, setup.data), "rows": rows}
    result["environment"]["load_average_end"] = list(os.getloadavg())
    result["environment"]["peak_memory"] = (
        "none"
        if args.memory == "none"
        else "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "VmHWM growth over VmRSS (malloc_trim, clear_refs), runners in turn in a subprocess per configuration"
    )
    print(markdown(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    return result


def _settings(args: argparse.Namespace) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


if __name__ == "__main__":
    main()
