"""Why log-variance and not log-sigma? Train each scale head from the same start and compare.

The classic recipe has the encoder emit ``log_var`` and uses ``exp(0.5 * log_var)`` as the standard deviation;
``ppl_vae``'s default head emits ``log_scale`` and uses ``exp(log_scale)``. With ``h_log_var = 2 * h_log_scale`` they
are the same distribution, the same samples and the same ELBO; only the gradient at the head's output differs (by a
factor 2), which changes how far Adam moves log-sigma per step. This script checks the identity on the data, then
trains the ``log_scale``, ``log_var`` and ``softplus`` heads from the same initial q(z | x) under the Monte Carlo and
the analytic KL, and prints the test ELBO each reached.

Usage::

    python examples/log_scale_vs_log_var.py --epochs 5 --out runs/log-scale-vs-log-var
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ppl_vae import lab, plots
from ppl_vae.checkpoint import save_json
from ppl_vae.heads import HEADS
from ppl_vae.tables import table


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="data set name or .npz path")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per head and estimator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/log-scale-vs-log-var"), help="output folder")
    args = parser.parse_args(argv)

    vae, data = lab.prepare(data_name=args.data, seed=args.seed)
    with torch.no_grad():
        _, h = vae.encoder.head_outputs(data.x_test)
    gap = (HEADS["log_scale"].scale(h) - HEADS["log_var"].scale(2 * h)).abs().max().item()
    print(f"exp(log_sigma) vs exp(0.5 * log_var) with log_var = 2 log_sigma, on every test image: max gap {gap:.1e}")

    settings = lab.LabConfig(epochs=args.epochs, seed=args.seed)
    rows = lab.compare_heads(vae, data, settings, progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "heads.json", {"data": data.name, "epochs": args.epochs, "heads": rows})
    plots.plot_heads(rows, args.out / "heads.png", title=f"{data.name}: scale heads from the same start")

    cells = [[row["head"], row["estimator"], f"{row['test_elbo_curve'][-1]:.3f}"] for row in rows]
    header = ["head", "estimator", f"test ELBO after {args.epochs} epoch(s), nats per example"]
    print(table(header, cells, align="llr", style="terminal"))
    final = {(row["head"], row["estimator"]): row["test_elbo_curve"][-1] for row in rows}
    for estimator in lab.HEAD_ESTIMATORS:
        difference = final[("log_var", estimator)] - final[("log_scale", estimator)]
        print(f"log_var - log_scale under {estimator}: {difference:+.3f} nats per example")
    print(f"JSON and figure in {args.out}")
    return rows


if __name__ == "__main__":
    main()
