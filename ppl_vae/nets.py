"""Plain torch networks that return raw outputs (no Pyro here).

The VAE puts a meaning on the outputs (``loc`` and a head output for the encoder, ``logits`` or ``loc`` for the
decoder); these networks only map ``(..., in_dim)`` to ``(..., out_dim)``. Leading dimensions are kept, so the same
network serves a minibatch ``(B, in_dim)`` and vectorized particles ``(K, B, in_dim)``.

An architecture (``--net``) is a pair of builders: the encoder maps images ``(..., D)`` to ``(..., out_dim)``, the
decoder maps latents ``(..., z_dim)`` to ``(..., out_dim)``; ``hidden`` lists widths from the data side inwards, so the
decoder uses them reversed.

Example::

    mlp = NETS.get("mlp")
    encoder = mlp.encoder(64, (128,), 2 * 8, (1, 8, 8))   # x (B, 64) -> [loc | h] (B, 16)
    decoder = mlp.decoder(8, (128,), 64, (1, 8, 8))       # z (B, 8)  -> logits (B, 64)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ppl_vae.registry import Registry

NETS = Registry("network")


@dataclass(frozen=True)
class Architecture:
    """Builders ``(in_dim, hidden, out_dim, image_shape) -> nn.Module`` for the encoder and the decoder."""

    encoder: Callable[[int, Sequence[int], int, tuple[int, int, int]], nn.Module]
    decoder: Callable[[int, Sequence[int], int, tuple[int, int, int]], nn.Module]


class MLP(nn.Sequential):
    """Fully connected ReLU network ``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``; the last layer is linear.

    Arguments:
        in_dim: size of the input's last dimension.
        hidden: widths of the hidden layers (at least one).
        out_dim: size of the output's last dimension.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], out_dim))
        super().__init__(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        return super().forward(inputs)


NETS.register("mlp")(
    Architecture(
        encoder=lambda x_dim, hidden, out_dim, image_shape: MLP(x_dim, hidden, out_dim),
        decoder=lambda z_dim, hidden, out_dim, image_shape: MLP(z_dim, tuple(reversed(hidden)), out_dim),
    )
)
