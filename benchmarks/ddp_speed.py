"""Data-parallel training's speed-up: ``ppl-vae train`` in 1 process against the same run in N (torchrun), side by side.

    PYTHONPATH=. python benchmarks/ddp_speed.py --out ddp.json                          # CPU: every core, 1 vs 2
    PYTHONPATH=. python benchmarks/ddp_speed.py --device cuda --processes 1,2 --out ddp-gpu.json   # 1 vs 2 GPUs (NCCL)

Each row is one whole ``python -m ppl_vae train`` run (``torchrun --standalone --nproc_per_node N -m ppl_vae train``
for N > 1, gloo on the CPU, NCCL on CUDA with one GPU per process) on the bundled digits resized to 28x28
(``examples/digits_to_npz.py --size 28``, 1,497 training images), with the same global ``--batch-size``, seed and
epochs. Reported: the median of the per-epoch training seconds that the run records in ``metrics.json`` (the loop's
wall time, the per-epoch evaluation excluded; the first epoch, with its start-up, left out), and the speed-up, the
1-process row's seconds over each row's.

**Threads on the CPU.** ``--cpu-threads T`` (default: every core) are shared out: 1 process runs with ``T`` torch
threads, N processes with ``T / N`` each (``OMP_NUM_THREADS``), so the rows compare the same cores used two ways, e.g.
on 2 cores "1 process x 2 threads" against "2 processes x 1 thread".

**Configurations** (``--configurations``): ``mlp`` the 784-400-50 MLP, ``conv`` the conv net (``--net conv``,
``--z-dim 50``), both at ``--batch-size`` (default 128). Rows of a configuration run one after the other, in turns
over ``--rounds``, so that a change in machine load hits them alike; the median over rounds is reported.

Output: a Markdown table on stdout and, with ``--out``, a JSON file with every number and the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import environment

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATIONS = {"mlp": ["--hidden", "400", "--z-dim", "50"], "conv": ["--net", "conv", "--z-dim", "50"]}
"""Each configuration's model flags of ``ppl-vae train``."""


def write_digits28(folder: Path) -> Path:
    """``folder/digits28.npz``: the digits at 28x28, written by ``examples/digits_to_npz.py``."""
    spec = importlib.util.spec_from_file_location("digits_to_npz", ROOT / "examples" / "digits_to_npz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = folder / "digits28.npz"
    with contextlib.redirect_stdout(io.StringIO()):
        module.main(["--size", "28", "--out", str(path)])
    return path


def cut_training_set(path: Path, examples: int) -> None:
    """Keep the first ``examples`` training images (and labels) of the npz at ``path``."""
    arrays = dict(np.load(path))
    for key in ("x_train", "y_train"):
        arrays[key] = arrays[key][:examples]
    np.savez(path, **arrays)


def command(processes: int, flags: list[str]) -> list[str]:
    """``python -m ppl_vae train FLAGS`` in one process, or under torchrun in ``processes``."""
    if processes == 1:
        return [sys.executable, "-m", "ppl_vae", "train", *flags]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [*launcher, "-m", "ppl_vae", "train", *flags]


def train_once(processes: int, threads: int | None, flags: list[str], out: Path) -> dict:
    """One run into ``out``; its ``metrics.json``. ``threads``: torch threads per process (``None`` on CUDA)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(
        command(processes, [*flags, "--out", str(out)]), cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command(processes, flags))} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def epoch_seconds(metrics: dict) -> float:
    """The median training seconds per epoch, the first epoch left out (when there are others)."""
    seconds = [record["seconds"] for record in metrics["history"]]
    return statistics.median(seconds[1:] or seconds)


def measure(args: argparse.Namespace, data: Path, folder: Path) -> dict:
    cuda = args.device.startswith("cuda")
    common = [
        *("--data", str(data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)),
        *("--eval-every", str(args.epochs), "--k", "1", "--eval-particles", "1", "--epoch-eval-particles", "1"),
        *("--device", args.device, "--seed", "0", "--no-progress"),
    ]
    rows = {}
    for name in args.configurations:
        runs: dict[int, list[float]] = {count: [] for count in args.processes}
        for round_number in range(args.rounds):
            for count in args.processes:
                threads = None if cuda else max(1, args.cpu_threads // count)
                out = folder / f"{name}-{count}-{round_number}"
                runs[count].append(epoch_seconds(train_once(count, threads, [*common, *CONFIGURATIONS[name]], out)))
        base = statistics.median(runs[args.processes[0]])
        rows[name] = {
            f"{count} x {'1 GPU' if cuda else f'{max(1, args.cpu_threads // count)} threads'}": {
                "processes": count,
                "epoch_seconds": statistics.median(seconds),
                "rounds": seconds,
                "speed_up": base / statistics.median(seconds),
            }
            for count, seconds in runs.items()
        }
    return rows


def markdown(result: dict) -> str:
    first = result["settings"]["processes"][0]
    lines = [
        f"| configuration | processes x threads | seconds per epoch | speed-up vs {first} process(es) |",
        "|---|---|---:|---:|",
    ]
    for name, rows in result["rows"].items():
        for label, row in rows.items():
            lines.append(f"| {name} | {label} | {row['epoch_seconds']:.3f} | {row['speed_up']:.2f} |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="process counts, the first the baseline (default 1,2)")
    parser.add_argument("--configurations", default="mlp,conv", help="mlp | conv, comma-separated")
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count(), help="threads shared by the processes")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is left out)")
    parser.add_argument("--batch-size", type=int, default=128, help="the global minibatch")
    parser.add_argument("--rounds", type=int, default=1, help="turns over the rows; the median is reported")
    parser.add_argument("--train-examples", type=int, default=None, help="cut the training set (smoke tests)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    args.processes = [int(count) for count in args.processes.split(",")]
    args.configurations = [name.strip() for name in args.configurations.split(",")]
    unknown = sorted(set(args.configurations) - set(CONFIGURATIONS))
    if unknown or min(args.processes) < 1:
        parser.error(f"--configurations from {sorted(CONFIGURATIONS)}, --processes >= 1 (got {unknown})")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data = write_digits28(folder)
        if args.train_examples is not None:
            cut_training_set(data, args.train_examples)
        rows = measure(args, data, folder)
    result = {
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "environment": environment(args.device),
        "rows": rows,
    }
    print(markdown(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
