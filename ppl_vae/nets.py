"""Plain torch networks that return raw outputs (no Pyro here).

The VAE puts a meaning on the outputs (``loc`` and a head output for the encoder, ``logits`` or ``loc`` for the
decoder); these networks only map ``(..., in_dim)`` to ``(..., out_dim)``. Leading dimensions are kept, so the same
network serves a minibatch ``(B, in_dim)`` and vectorized particles ``(K, B, in_dim)``.

An architecture (``--net``) is a pair of builders: the encoder maps images ``(..., D)`` to ``(..., out_dim)``, the
decoder maps latents ``(..., z_dim)`` to ``(..., out_dim)``; ``hidden`` lists widths from the data side inwards, so the
decoder uses them reversed.

================  ===================================================================================
name (``--net``)  encoder / decoder
================  ===================================================================================
``mlp``           fully connected ReLU layers of widths ``hidden``
``conv``          two stride-2 convolutions (``CONV_CHANNELS``) then ``hidden`` dense layers; the
                  decoder mirrors it with transposed convolutions. Images are reshaped to ``(C, H, W)``
                  inside.
================  ===================================================================================

An architecture states what it requires of the configuration (``register(..., requires=...)``, checked by
:mod:`ppl_vae.parts`): ``conv`` takes no labels (``--conditional`` needs ``--net mlp``).

Example::

    mlp = NETS.get("mlp")
    encoder = mlp.encoder(64, (128,), 2 * 8, (1, 8, 8))   # x (B, 64) -> [loc | h] (B, 16)
    decoder = mlp.decoder(8, (128,), 64, (1, 8, 8))       # z (B, 8)  -> logits (B, 64)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

if TYPE_CHECKING:
    from ppl_vae.config import ModelConfig

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


CONV_CHANNELS = (32, 64)
"""Channels of the two stride-2 convolutions of the ``conv`` networks (data side first)."""


def _halved(size: int) -> int:
    """Side length after a 3x3 convolution with stride 2 and padding 1: ``ceil(size / 2)``."""
    return (size + 1) // 2


class ConvEncoder(nn.Module):
    """``(..., C*H*W) -> (..., out_dim)``: reshape to ``(C, H, W)``, two 3x3 stride-2 ReLU convolutions (each halves
    the side, rounding up: 8 -> 4 -> 2, 28 -> 14 -> 7), flatten, then an :class:`MLP` through ``hidden``.

    Leading dimensions (a minibatch ``(B,)`` or particles ``(K, B)``) are flattened into one batch and restored.
    """

    def __init__(self, image_shape: tuple[int, int, int], hidden: Sequence[int], out_dim: int):
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        first, second = CONV_CHANNELS
        self.conv = nn.Sequential(
            nn.Conv2d(channels, first, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.dense = MLP(second * _halved(_halved(height)) * _halved(_halved(width)), hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C*H*W) -> (..., out_dim)``."""
        leading = x.shape[:-1]
        features = self.conv(x.reshape(-1, *self.image_shape)).flatten(1)
        return self.dense(features).reshape(*leading, -1)


class ConvDecoder(nn.Module):
    """``(..., z_dim) -> (..., out_dim)`` with ``out_dim = outputs_per_pixel * C*H*W``: an :class:`MLP` through
    ``hidden`` (reversed) to a ``(64, ceil(H/4), ceil(W/4))`` feature map, then two 3x3 stride-2 transposed
    convolutions (each doubles the side), cropped to ``(H, W)``.

    The ``out_dim / (H W)`` output channels are flattened channel-major, so a likelihood that splits its output into
    blocks of ``D`` values (one block per pixel parameter) reads one whole image per block, as from the MLP.
    """

    def __init__(self, z_dim: int, hidden: Sequence[int], out_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        _, height, width = image_shape
        if out_dim % (height * width):
            raise ValueError(f"out_dim {out_dim} is not a whole number of {height}x{width} images")
        self.height, self.width = height, width
        first, second = CONV_CHANNELS
        self.start = (second, _halved(_halved(height)), _halved(_halved(width)))
        self.dense = MLP(z_dim, tuple(reversed(hidden)), math.prod(self.start))
        self.deconv = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(second, first, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(first, out_dim // (height * width), 3, stride=2, padding=1, output_padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., z_dim) -> (..., out_dim)``."""
        leading = z.shape[:-1]
        features = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        images = self.deconv(features)[..., : self.height, : self.width]
        return images.reshape(*leading, -1)


def _images_only(config: ModelConfig) -> None:
    """The ``conv`` networks read ``(C, H, W)`` images: a conditional VAE's one-hot labels, concatenated to the
    flat input, have no place in them."""
    if config.num_classes:
        raise InputError(
            f"--conditional concatenates one-hot labels to flat inputs: it needs --net mlp, got --net {config.net}"
        )


NETS.register("conv", requires=_images_only)(
    Architecture(
        encoder=lambda x_dim, hidden, out_dim, image_shape: ConvEncoder(image_shape, hidden, out_dim),
        decoder=lambda z_dim, hidden, out_dim, image_shape: ConvDecoder(z_dim, hidden, out_dim, image_shape),
    )
)
