"""Is training in 2 processes with the default (independent, per-rank) noise equal *in distribution* to 1 process?

    PYTHONPATH=. python benchmarks/ddp_noise.py --seeds 5 --epochs 10 --out ddp-noise.json

For each seed ``0 .. S-1``, ``ppl-vae train`` on the digits runs once in 1 process and once in 2 (torchrun, one thread
each, the same global ``--batch-size``, data order and initial weights; other draws of the guide's noise and of the
binarization). Reported: each count's final test ELBO (nats per example, higher is better) as a mean over seeds with
its standard error, and the mean paired difference (2 processes - 1) with its standard error: a difference within a
few standard errors of 0 is what equality in distribution predicts. (With ``--keyed-noise`` the two are equal draw
for draw; ``tests/test_distributed.py`` checks that.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ddp_speed import train_once

from ppl_vae.compare import mean_and_se


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    flags = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--eval-every", str(args.epochs)]
    flags += ["--k", "10", "--no-progress"]
    elbos: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for count in elbos:
                out = Path(folder) / f"{seed}-{count}"
                elbos[count].append(train_once(count, 1, [*flags, "--seed", str(seed)], out)["test_elbo"])
    result = {"settings": vars(args) | {"out": None}, "test_elbo": elbos}
    for count, values in elbos.items():
        result[f"{count}_process_mean_se"] = mean_and_se(values)
    result["difference_mean_se"] = mean_and_se([b - a for a, b in zip(elbos[1], elbos[2], strict=True)])
    for key in ("1_process_mean_se", "2_process_mean_se", "difference_mean_se"):
        mean, se = result[key]
        print(f"{key.removesuffix('_mean_se').replace('_', ' ')}: {mean:.3f} +- {se:.3f} nats per example")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
