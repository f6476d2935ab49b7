"""Small MNIST-style IDX files written by the tests themselves (no network)."""

import struct

import numpy as np


def write_idx(path, array):
    """Write a uint8 array in the IDX format (magic 0x0000 08 <ndim>, big-endian int32 sizes, raw bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fake_mnist(root, folder, rng, num_train=5, num_test=3):
    """Random 28x28 images with labels ``9, 8, 7, ...`` in torchvision's ``<root>/<folder>/raw`` layout.

    Returns ``{"train": (images, labels), "t10k": (images, labels)}`` as uint8 arrays.
    """
    arrays = {
        prefix: (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), ((9 - np.arange(count)) % 10).astype(np.uint8))
        for prefix, count in (("train", num_train), ("t10k", num_test))
    }
    for prefix, (images, labels) in arrays.items():
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return arrays
