"""Write the bundled 8x8 digits, resized to SIZE x SIZE, as an .npz that `ppl-vae train --data FILE.npz` reads.

    python examples/digits_to_npz.py --size 28 --out digits28.npz

Bilinear resizing of the grey levels; uint8 0..255 with labels, the same train/test split as `--data digits`.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from ppl_vae.data import load_dataset


def resize(x: torch.Tensor, size: int) -> np.ndarray:
    """``(N, 64)`` grey levels in [0, 1] -> ``(N, size, size)`` uint8."""
    images = F.interpolate(x.reshape(-1, 1, 8, 8), size=(size, size), mode="bilinear", align_corners=False)
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--out", default="digits28.npz")
    args = parser.parse_args(argv)
    data = load_dataset("digits")
    np.savez_compressed(
        args.out,
        x_train=resize(data.x_train, args.size),
        x_test=resize(data.x_test, args.size),
        y_train=data.y_train.numpy(),
        y_test=data.y_test.numpy(),
    )
    print(f"wrote {args.out}: {len(data.x_train)} train and {len(data.x_test)} test images of {args.size}x{args.size}")


if __name__ == "__main__":
    main()
