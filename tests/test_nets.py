"""Tests for ppl_vae.nets: every architecture on 8x8 and 28x28 images (and an odd size), with leading sample dims."""

import math

import pytest
import torch

from ppl_vae.config import ModelConfig
from ppl_vae.evaluate import log_importance_weights
from ppl_vae.nets import NETS, ConvDecoder, ConvEncoder
from ppl_vae.vae import VAE

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 5, 7)]


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("image_shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_leading_dims_are_kept_and_independent(name, image_shape):
    """``(K, B, D) -> (K, B, out)`` equals applying the network to each ``(D,)`` row alone."""
    torch.manual_seed(0)
    x_dim = math.prod(image_shape)
    architecture = NETS.get(name)
    encoder = architecture.encoder(x_dim, (32,), 2 * 4, image_shape)
    decoder = architecture.decoder(4, (32,), 2 * x_dim, image_shape)  # two outputs per pixel
    x = torch.rand(3, 2, x_dim)
    z = torch.randn(3, 2, 4)
    codes, outputs = encoder(x), decoder(z)
    assert codes.shape == (3, 2, 8) and outputs.shape == (3, 2, 2 * x_dim)
    assert encoder(x[0]).shape == (2, 8) and decoder(z[0, 0]).shape == (2 * x_dim,)
    for k in range(3):
        for b in range(2):
            assert torch.allclose(codes[k, b], encoder(x[k, b]), atol=1e-6)
            assert torch.allclose(outputs[k, b], decoder(z[k, b]), atol=1e-6)


@pytest.mark.parametrize("image_shape, features", [((1, 8, 8), 64 * 2 * 2), ((1, 28, 28), 64 * 7 * 7)])
def test_conv_sizes(image_shape, features):
    """Two stride-2 convolutions: 8 -> 4 -> 2 and 28 -> 14 -> 7; the decoder mirrors them back to the image."""
    encoder = ConvEncoder(image_shape, (16,), 6)
    assert encoder.dense[0].in_features == features
    decoder = ConvDecoder(3, (16,), math.prod(image_shape), image_shape)
    assert decoder.dense[-1].out_features == features


def test_conv_encoder_sees_images_not_vectors():
    """A conv encoder's first layer is local: a pixel far from the top-left 3x3 patch does not change the first
    feature map's top-left value, whereas in the flat layout it is just another input."""
    torch.manual_seed(0)
    encoder = ConvEncoder((1, 8, 8), (16,), 4)
    x = torch.rand(1, 64)
    moved = x.clone()
    moved[0, 7 * 8 + 7] += 1.0  # bottom-right pixel
    first = encoder.conv[0]
    top_left = first(x.reshape(1, 1, 8, 8))[..., 0, 0]
    assert torch.equal(top_left, first(moved.reshape(1, 1, 8, 8))[..., 0, 0])
    assert not torch.equal(encoder(x), encoder(moved))


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28)], ids=["8x8", "28x28"])
def test_conv_vae_with_importance_samples(image_shape):
    """The conv VAE in the evaluation's vectorized plate: log weights ``(samples, examples)``, finite."""
    x_dim = math.prod(image_shape)
    vae = VAE(ModelConfig(x_dim=x_dim, image_shape=image_shape, z_dim=4, hidden=(16,), net="conv"))
    x = torch.rand(5, x_dim).round()
    log_weights = log_importance_weights(vae.model, vae.guide, x, num_samples=3)
    assert log_weights.shape == (3, 5) and torch.isfinite(log_weights).all()
    assert vae.reconstruct(x).shape == (5, x_dim) and vae.sample(2).shape == (2, x_dim)


def _halved_twice(size: int) -> int:
    return (((size + 1) // 2) + 1) // 2


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (2, 8, 12)], ids=["1x8x8", "2x8x12"])
def test_conv_encoder_reads_a_row_major_image_as_rows_and_columns(image_shape):
    """With known weights (centre taps only, identity dense layers) the conv encoder is a stride-4 subsampling of one
    channel: output ``j`` is pixel ``(c, 4 r, 4 s)`` of the image ``x.reshape(C, H, W)``, ``j = r w + s``. A transposed
    or mis-shaped image (H and W swapped) reads other pixels or the same pixels in another order. (An output that
    differs between an image and its transpose would not detect the swap: a swapped encoder is f(x^T), which differs
    from f(x) as well.)"""
    channels, height, width = image_shape
    features = _halved_twice(height) * _halved_twice(width)
    encoder = ConvEncoder(image_shape, (features,), features)
    read = channels - 1
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.zero_()
        encoder.conv[0].weight[0, read, 1, 1] = 1.0
        encoder.conv[2].weight[0, 0, 1, 1] = 1.0
        encoder.dense[0].weight[:, :features] = torch.eye(features)  # channel 0 of the flattened (64, h, w) maps
        encoder.dense[2].weight.copy_(torch.eye(features))
    x = torch.rand(2, 3, math.prod(image_shape))  # non-negative: every ReLU passes it
    expected = x.reshape(2, 3, channels, height, width)[..., read, ::4, ::4].flatten(-2)
    assert torch.equal(encoder(x), expected)


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (2, 8, 12)], ids=["1x8x8", "2x8x12"])
def test_conv_decoder_writes_a_row_major_image(image_shape):
    """The mirror image: with centre taps only, latent ``j = r w + s`` lands on pixel ``(c, 4 r, 4 s)`` of the output
    ``reshape(C, H, W)`` and every other pixel is 0."""
    channels, height, width = image_shape
    features = _halved_twice(height) * _halved_twice(width)
    decoder = ConvDecoder(features, (features,), math.prod(image_shape), image_shape)
    write = channels - 1
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.zero_()
        decoder.dense[0].weight.copy_(torch.eye(features))
        decoder.dense[2].weight[:features] = torch.eye(features)  # into channel 0 of the (64, h, w) maps
        decoder.deconv[1].weight[0, 0, 1, 1] = 1.0
        decoder.deconv[3].weight[0, write, 1, 1] = 1.0
    z = torch.rand(3, features)
    expected = torch.zeros(3, channels, height, width)
    expected[:, write, ::4, ::4] = z.reshape(3, _halved_twice(height), _halved_twice(width))
    assert torch.equal(decoder(z), expected.flatten(1))
