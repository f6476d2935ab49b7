"""What evaluating log p(x) with ppl_vae costs, against a vectorized IWAE that a user writes by hand in plain torch.

    PYTHONPATH=. python benchmarks/eval_speed.py --out benchmarks/results/eval-cpu.json     # k = 5000, 10,000 examples
    PYTHONPATH=. python benchmarks/eval_speed.py --quick --out quick.json                   # 1,000 examples, 3 rounds
    PYTHONPATH=. python benchmarks/eval_speed.py --device cuda --configuration mlp-784-400-50
    PYTHONPATH=. python benchmarks/eval_speed.py --memory-mb 64                             # chunks from a budget

**The measured side** is :func:`ppl_vae.iwae_log_likelihood` (what ``ppl-vae train``'s final evaluation and
``ppl-vae evaluate`` run): the guide traced with ``k`` samples per example in a vectorized plate, the model replayed on
it, per-example log-densities from the traces, a running ``logsumexp`` over passes.

**The baseline** is the IWAE a user writes from the paper (Burda et al. 2015), in this file as plain torch with no
project code: ``nn.Linear`` encoder and decoder of the same architecture, loaded with the same weights; for each batch
of examples, passes of ``S`` samples ``z = loc + exp(log_scale) * eps``; ``log p(x | z)`` as minus the
BCE-with-logits, ``log N(z; 0, I) - log N(z; loc, scale)`` written out; ``torch.logsumexp`` over the samples, combined
across passes with ``torch.logaddexp``; minus ``log k``.

**The same work on both sides**: the same test examples (the data set's test images repeated to ``--examples``,
binarized once with the evaluation's seed), the same batches of ``--batch-size`` examples, and the same samples per
pass: ppl_vae's default bound (at most 2^24 ``samples x examples x pixels``) or, with ``--memory-mb``, the passes that
ppl_vae's measured budget plans (:mod:`ppl_vae.eval_memory`); the baseline is handed that number of samples per pass.

**Taking turns**: after a warm-up pass of each, ``--rounds`` rounds each run both evaluations over every example, in
alternating order, so that a change in machine load hits them alike; each starts from the same seed, so both draw the
same noise and compute the same numbers (``max_abs_difference``, nats, per example: float rounding only). Reported:
the median seconds, examples per second, the ratio ppl_vae / hand-written, both estimates of log p(x) (nats per
example) and, on CUDA, the peak memory above the start.

Output: a Markdown table on stdout and, with ``--out X.json``, every number and the environment in ``X.json`` and the
table in ``X.md``.

Configurations (``--configuration``): ``mlp-64-128-8`` (the digits, 8x8, 300 test images) and ``mlp-784-400-50``
(the digits resized to 28x28 by ``examples/digits_to_npz.py``). Networks at their initial weights (seeded): the
cost of evaluation does not depend on what the weights have learnt.

This is the project's one evaluation benchmark; ``benchmarks/epoch_speed.py`` measures training only, and
``benchmarks/gpu.sh`` runs both on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import environment
from torch import nn

import ppl_vae
from ppl_vae.evaluate import MAX_ELEMENTS, observed_test_set, planned_batches
from ppl_vae.tables import table
from ppl_vae.train import seed_everything

LOG_2PI = math.log(2 * math.pi)
CONFIGURATIONS = {"mlp-64-128-8": ("digits", (128,), 8), "mlp-784-400-50": ("digits28", (400,), 50)}
"""name -> (data, hidden widths, z_dim)."""
QUICK = {"examples": 1000, "rounds": 3}
"""``--quick``: 1,000 examples (k = 5000 still), 3 rounds."""


# --- the hand-written IWAE: torch only ------------------------------------------------------------------------------
def plain_networks(x_dim: int, hidden: tuple[int, ...], z_dim: int) -> tuple[nn.Module, nn.Module]:
    """Encoder ``x (B, D) -> [loc | log_scale] (B, 2 z_dim)`` and decoder ``z (..., z_dim) -> logits (..., D)``."""

    def dense(widths: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    return dense([x_dim, *hidden, 2 * z_dim]), dense([z_dim, *hidden[::-1], x_dim])


def log_normal(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``sum_j log N(z_j; loc_j, scale_j)`` over the last dimension."""
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


@torch.no_grad()
def plain_iwae(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, k: int, batch_size: int, samples_per_pass: int
) -> torch.Tensor:
    """``log (1/k) sum_s exp(log p(x, z_s) - log q(z_s | x))`` per example, ``(N,)`` nats: batches of
    ``batch_size`` examples, passes of ``samples_per_pass`` samples."""
    values = []
    for xb in x.split(batch_size):
        loc, log_scale = encoder(xb).chunk(2, dim=-1)
        scale = torch.exp(log_scale)
        running = None
        for start in range(0, k, samples_per_pass):
            size = min(samples_per_pass, k - start)
            z = loc + scale * torch.randn((size, *loc.shape), device=loc.device, dtype=loc.dtype)
            logits = decoder(z)
            log_px = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_w = log_px + log_normal(z, torch.zeros_like(z), torch.ones_like(z)) - log_normal(z, loc, scale)
            total = torch.logsumexp(log_w, dim=0)
            running = total if running is None else torch.logaddexp(running, total)
        values.append(running - math.log(k))
    return torch.cat(values)


# --- the set-up: data, the VAE, the same weights in the plain networks ----------------------------------------------
def load_data(name: str) -> ppl_vae.Dataset:
    """The digits, or the digits resized to 28x28 (written and read back as ``examples/digits_to_npz.py`` does)."""
    if name == "digits":
        return ppl_vae.load_dataset("digits")
    path = Path(__file__).resolve().parent.parent / "examples" / "digits_to_npz.py"
    spec = importlib.util.spec_from_file_location("digits_to_npz", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        out = str(Path(folder) / "digits28.npz")
        module.main(["--size", "28", "--out", out])
        return ppl_vae.load_dataset(out)


def build(configuration: str, device: torch.device, seed: int):
    """The VAE, the plain encoder and decoder with its weights, and the data set of ``configuration``."""
    data_name, hidden, z_dim = CONFIGURATIONS[configuration]
    data = load_data(data_name)
    seed_everything(seed)
    vae = ppl_vae.VAE(ppl_vae.model_config_for(data, z_dim=z_dim, hidden=hidden)).to(device).eval()
    encoder, decoder = plain_networks(data.x_dim, hidden, z_dim)
    for network, prefix in ((encoder, "encoder.net."), (decoder, "decoder.")):
        source = [value for key, value in vae.state_dict().items() if key.startswith(prefix)]
        target = network.state_dict()
        if [v.shape for v in source] != [v.shape for v in target.values()]:
            raise RuntimeError(f"the plain {prefix[:-1]} does not match the VAE's")
        network.load_state_dict(dict(zip(target, source, strict=True)))
    return vae, encoder.to(device).eval(), decoder.to(device).eval(), data


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    vae, encoder, decoder, data = build(args.configuration, device, args.seed)
    repeats = math.ceil(args.examples / len(data.x_test))
    x = observed_test_set(data.x_test.repeat(repeats, 1)[: args.examples], binary=True).to(device)
    batch_size = min(args.batch_size, args.examples)
    _, _, plan = planned_batches(vae.model, vae.guide, x, (), batch_size, None, MAX_ELEMENTS, args.memory_mb)
    samples_per_pass = next(plan.sizes(x[:batch_size], args.k))
    options = {"batch_size": batch_size, "memory_mb": args.memory_mb}
    sides = {
        "ppl_vae": lambda xs, k: ppl_vae.iwae_log_likelihood(vae.model, vae.guide, xs, k=k, **options).per_example,
        "plain": lambda xs, k: plain_iwae(encoder, decoder, xs, k, batch_size, samples_per_pass),
    }
    for evaluate in sides.values():  # warm-up, excluded
        evaluate(x[:batch_size], min(args.k, samples_per_pass))
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    values, peak = {}, {}
    for number in range(args.rounds):
        for side in list(sides)[number % 2 :] + list(sides)[: number % 2]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            torch.manual_seed(args.seed)  # both sides draw the same noise: the same numbers, compared below
            synchronize(device)
            started = time.perf_counter()
            values[side] = sides[side](x, args.k)
            synchronize(device)
            seconds[side].append(time.perf_counter() - started)
            if device.type == "cuda":
                peak[side] = (torch.cuda.max_memory_allocated(device) - before) / 1e6
    result = {
        "configuration": args.configuration,
        "k": args.k,
        "examples": args.examples,
        "batch_size": batch_size,
        "memory_mb": args.memory_mb,
        "samples_per_pass": samples_per_pass,
    }
    for side in sides:
        median = statistics.median(seconds[side])
        estimate = values[side].double()
        result[side] = {
            "seconds": median,
            "rounds_seconds": seconds[side],
            "examples_per_second": args.examples / median,
            "log_px": estimate.mean().item(),
            "log_px_se": (estimate.std() / math.sqrt(estimate.numel())).item() if estimate.numel() > 1 else None,
            "peak_memory_mb": peak.get(side),
        }
    result["ratio"] = result["ppl_vae"]["seconds"] / result["plain"]["seconds"]
    result["max_abs_difference"] = (values["ppl_vae"].double() - values["plain"].double()).abs().max().item()
    return result


def markdown(result: dict) -> str:
    budget = (
        "at most 2^24 samples x examples x pixels per pass"
        if result["memory_mb"] is None
        else f"--memory-mb {result['memory_mb']:g}"
    )
    lines = [
        f"IWAE log p(x), k = {result['k']}, {result['examples']} examples, {result['configuration']}, batches of "
        f"{result['batch_size']} examples, {result['samples_per_pass']} samples per pass ({budget})\n"
    ]
    header = ["evaluation", "seconds", "examples per s", "ratio", "log p(x), nats per example", "peak MB"]
    rows = []
    for side, label in (("ppl_vae", "`ppl_vae.iwae_log_likelihood`"), ("plain", "hand-written vectorized IWAE")):
        row = result[side]
        se = "" if row["log_px_se"] is None else f" +- {row['log_px_se']:.3f}"
        ratio = f"{result['ratio']:.2f}" if side == "ppl_vae" else "1.00"
        memory = "-" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.1f}"
        rows.append(
            [
                label,
                f"{row['seconds']:.2f}",
                f"{row['examples_per_second']:.0f}",
                ratio,
                f"{row['log_px']:.2f}{se}",
                memory,
            ]
        )
    lines.append(table(header, rows))
    env = result["environment"]
    lines.append(
        f"\ntorch {env['torch']}, pyro {env['pyro']}, {env['device']}{' (' + env['gpu'] + ')' if env['gpu'] else ''}, "
        f"{env['threads']} thread(s), load average {env['load_average'][0]:.2f} at the start, "
        f"{env['load_average_end'][0]:.2f} at the end; median of {len(result['ppl_vae']['rounds_seconds'])} round(s); "
        f"largest per-example difference between the two {result['max_abs_difference']:.1e} nats (same draws)"
    )
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configuration", default="mlp-64-128-8", choices=sorted(CONFIGURATIONS))
    parser.add_argument("--k", type=int, default=5000, help="importance samples per example")
    parser.add_argument("--examples", type=int, default=10000, help="test examples (the test images repeated)")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per batch, on both sides")
    parser.add_argument("--memory-mb", type=float, default=None, help="ppl_vae's budget per pass (sets both sides)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here (and .md beside)")
    parser.add_argument("--quick", action="store_true", help="1,000 examples and 3 rounds, unless given")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    for name in ("k", "examples", "batch_size", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    torch.set_num_threads(args.threads)
    env = environment(torch.device(args.device))
    result = measure(args)
    env["load_average_end"] = list(os.getloadavg())
    result["environment"] = env
    result["settings"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
