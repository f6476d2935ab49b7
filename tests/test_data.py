"""Tests for ppl_vae.data: loaders (digits, torchvision IDX files, .npz), validation, binarization, minibatches."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from idx_files import write_fake_mnist

from ppl_vae import data
from ppl_vae.data import (
    DATASETS,
    Dataset,
    binarize,
    binarize_fixed,
    load_dataset,
    minibatches,
    register_dataset,
    validate_images,
)
from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

TORCHVISION_SETS = [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")]


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_and_range(digits):
    assert digits.name == "digits"
    assert digits.x_train.shape == (1497, 64) and digits.x_test.shape == (300, 64)
    assert digits.x_train.dtype == digits.x_test.dtype == torch.float32
    assert digits.y_train.shape == (1497,) and digits.y_test.shape == (300,)
    assert digits.y_train.dtype == digits.y_test.dtype == torch.int64
    assert digits.image_shape == (1, 8, 8) and digits.x_dim == 64
    for x in (digits.x_train, digits.x_test):
        assert x.min() == 0 and x.max() == 1
        assert torch.equal(x * 16, (x * 16).round())  # grey levels k / 16
    assert digits.x_train.device.type == "cpu"


def test_digits_labels(digits):
    assert set(digits.y_train.tolist()) == set(range(10))
    assert set(digits.y_test.tolist()) == set(range(10))
    assert digits.num_classes == 10


def test_digits_split_is_fixed(digits):
    again = load_dataset("digits")
    for name in ("x_train", "x_test", "y_train", "y_test"):
        assert torch.equal(getattr(digits, name), getattr(again, name))


def test_digits_split_matches_sklearn(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    together = torch.cat([digits.x_train, digits.x_test]) * 16
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, raw.data.tolist()))


# ---------------------------------------------------------------- torchvision data sets from IDX files


@pytest.mark.parametrize("name, folder", TORCHVISION_SETS)
def test_torchvision_sets_from_idx_files(tmp_path, name, folder):
    arrays = write_fake_mnist(tmp_path, folder, np.random.default_rng(0))
    dataset = load_dataset(name, root=str(tmp_path))
    assert dataset.name == name and dataset.image_shape == (1, 28, 28) and dataset.x_dim == 784
    for x, y, prefix in ((dataset.x_train, dataset.y_train, "train"), (dataset.x_test, dataset.y_test, "t10k")):
        images, labels = arrays[prefix]
        assert x.shape == (len(images), 784) and x.dtype == torch.float32
        assert torch.equal(x, torch.from_numpy(images).reshape(len(images), -1) / 255)
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    assert dataset.num_classes == 10


@pytest.mark.parametrize("name, folder", TORCHVISION_SETS)
def test_torchvision_missing_files(tmp_path, name, folder):
    with pytest.raises(InputError, match=re.escape(str(tmp_path / folder / "raw")) + ".*--download"):
        load_dataset(name, root=tmp_path, download=False)


def test_torchvision_default_root(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEFAULT_ROOT", tmp_path / "cache")
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "cache" / "MNIST" / "raw"))):
        load_dataset("mnist")


# ---------------------------------------------------------------- .npz files


def save_npz(tmp_path, **arrays):
    path = tmp_path / "images.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_uint8_images_with_labels(tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8), rng.integers(0, 256, (2, 5, 7), dtype=np.uint8)
    path = save_npz(tmp_path, x_train=x_train, x_test=x_test, y_train=np.arange(6), y_test=np.array([0, 11]))
    dataset = load_dataset(path)
    assert dataset.name == path and dataset.image_shape == (1, 5, 7) and dataset.x_dim == 35
    assert dataset.x_train.dtype == torch.float32 and dataset.x_train.shape == (6, 35)
    assert torch.equal(dataset.x_train, torch.from_numpy(x_train).reshape(6, 35) / 255)
    assert torch.equal(dataset.x_test, torch.from_numpy(x_test).reshape(2, 35) / 255)
    assert dataset.y_train.dtype == torch.int64 and dataset.y_train.tolist() == list(range(6))
    assert dataset.y_test.tolist() == [0, 11]
    assert dataset.num_classes == 12


@pytest.mark.parametrize("dim, image_shape", [(16, (1, 4, 4)), (10, (1, 1, 10))])
def test_npz_float_flat_images_without_labels(tmp_path, dim, image_shape):
    rng = np.random.default_rng(2)
    x_train, x_test = rng.random((4, dim)), rng.random((3, dim)).astype(np.float32)
    dataset = load_dataset(save_npz(tmp_path, x_train=x_train, x_test=x_test))
    assert dataset.image_shape == image_shape
    assert dataset.x_train.dtype == dataset.x_test.dtype == torch.float32
    assert torch.equal(dataset.x_train, torch.from_numpy(x_train).float())
    assert torch.equal(dataset.x_test, torch.from_numpy(x_test))
    assert dataset.y_train is None and dataset.y_test is None and dataset.num_classes == 0


def test_npz_channels(tmp_path):
    x_train, x_test = np.full((2, 3, 4, 5), 0.25, dtype=np.float32), np.zeros((1, 3, 4, 5), dtype=np.float32)
    dataset = load_dataset(save_npz(tmp_path, x_train=x_train, x_test=x_test, y_train=np.array([1, 0])))
    assert dataset.image_shape == (3, 4, 5) and dataset.x_train.shape == (2, 60) and dataset.x_test.shape == (1, 60)
    assert torch.equal(dataset.x_train.reshape(-1, *dataset.image_shape), torch.from_numpy(x_train))
    assert dataset.y_test is None and dataset.num_classes == 2


# ---------------------------------------------------------------- bad input


def test_unknown_name_lists_valid_names():
    expected = "unknown data set 'foo': expected one of digits, fashion-mnist, kmnist, mnist, or a path to an .npz file"
    with pytest.raises(InputError, match=re.escape(expected)):
        load_dataset("foo")


def test_npz_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(InputError, match=re.escape(str(path)) + " not found"):
        load_dataset(str(path))


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip file")
    with pytest.raises(InputError, match="expected an .npz archive"):
        load_dataset(str(path))


def test_npz_without_x_test(tmp_path):
    path = save_npz(tmp_path, x_train=np.zeros((2, 4)), y_train=np.zeros(2, dtype=int))
    with pytest.raises(InputError, match=r"holds arrays \['x_train', 'y_train'\]: expected x_train and x_test"):
        load_dataset(path)


@pytest.mark.parametrize(
    "x_train, message",
    [
        (np.full((2, 4), 1.5), r"x_train has values from min 1\.5 to max 1\.5: expected values in \[0, 1\]"),
        (np.array([[0.5, -0.5], [0.0, 1.0]]), r"min -0\.5 to max 1: expected values in \[0, 1\]"),
        (np.array([[np.nan, 0.5], [np.nan, 0.0]]), r"x_train has 2 NaN or infinite values"),
        (np.array([[np.inf, 0.5], [0.0, 0.0]]), r"x_train has 1 NaN or infinite values"),
        (np.array([[0, 255], [3, 4]], dtype=np.int64), r"dtype int64, min 0, max 255: expected uint8 0\.\.255"),
        (np.zeros((2, 1, 2, 2, 1)), r"x_train has shape \(2, 1, 2, 2, 1\): expected \(N, D\)"),
    ],
)
def test_npz_bad_images(tmp_path, x_train, message):
    x_test = np.zeros((1, *x_train.shape[1:]))
    with pytest.raises(InputError, match=message):
        load_dataset(save_npz(tmp_path, x_train=x_train, x_test=x_test))


def test_npz_mismatched_shapes(tmp_path):
    path = save_npz(tmp_path, x_train=np.zeros((2, 4, 4)), x_test=np.zeros((2, 16)))
    with pytest.raises(InputError, match=r"x_train has examples of shape \(4, 4\) but x_test has \(16,\)"):
        load_dataset(path)


@pytest.mark.parametrize(
    "labels, message",
    [
        ({"y_train": np.arange(3)}, r"y_train has shape \(3,\): expected \(2,\), one label per example"),
        ({"y_test": np.arange(2)}, r"y_test has shape \(2,\): expected \(1,\), one label per example"),
        ({"y_train": np.array([0.0, 1.0])}, r"y_train has shape \(2,\) and dtype float64: expected \(N,\) integer"),
        ({"y_train": np.array([0, -1])}, r"y_train has min -1: expected class labels >= 0"),
    ],
)
def test_npz_bad_labels(tmp_path, labels, message):
    path = save_npz(tmp_path, x_train=np.zeros((2, 4)), x_test=np.zeros((1, 4)), **labels)
    with pytest.raises(InputError, match=message):
        load_dataset(path)


def test_validate_images():
    x = validate_images(np.array([[0.0, 0.5], [1.0, 0.25]]), "x")
    assert x.dtype == torch.float32 and torch.equal(x, torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    with pytest.raises(InputError, match=r"images has shape \(4,\): expected a non-empty 2-D"):
        validate_images(torch.zeros(4), "images")
    with pytest.raises(InputError, match=r"images has shape \(0, 3\)"):
        validate_images(torch.zeros(0, 3), "images")
    with pytest.raises(InputError, match="images has dtype torch.int64: expected floating-point"):
        validate_images(torch.zeros(2, 2, dtype=torch.int64), "images")


def test_dataset_checks_shapes():
    x = torch.zeros(3, 4)
    with pytest.raises(InputError, match=r"toy: x_test has shape \(3, 4\): expected \(N, 6\)"):
        Dataset("toy", torch.zeros(3, 6), x, None, None, (1, 2, 3))
    with pytest.raises(InputError, match=r"toy: y_train has shape \(2,\): expected \(3,\)"):
        Dataset("toy", x, x, torch.zeros(2, dtype=torch.int64), None, (1, 2, 2))


def test_register_dataset(monkeypatch):
    registry = Registry("data set")
    registry.update(DATASETS)
    monkeypatch.setattr(data, "DATASETS", registry)
    toy = Dataset("toy", torch.zeros(2, 4), torch.ones(1, 4), None, None, (1, 2, 2))
    calls = []

    @register_dataset("toy")
    def load_toy(root, download):
        calls.append((root, download))
        return toy

    assert data.DATASETS["toy"] is load_toy and "toy" not in DATASETS
    assert load_dataset("toy", root="~/somewhere", download=True) is toy
    assert calls == [(Path("~/somewhere").expanduser(), True)]
    with pytest.raises(ValueError, match="data set 'toy' is registered twice"):
        register_dataset("toy")(load_toy)


# ---------------------------------------------------------------- binarization


def test_binarize_values_shape_dtype():
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = binarize(x, torch.Generator().manual_seed(1))
    assert b.shape == x.shape and b.dtype == torch.float64 and b.device == x.device
    assert set(b.unique().tolist()) <= {0.0, 1.0}


def test_binarize_mean_matches_grey_levels(digits):
    probs = digits.x_test[:20]  # (20, 64) grey levels, with exact 0s and 1s
    draws = 2000
    b = binarize(probs.expand(draws, *probs.shape), torch.Generator().manual_seed(0))
    mean = b.mean(0)
    standard_error = (probs * (1 - probs) / draws).sqrt()
    assert torch.all((mean - probs).abs() <= 4 * standard_error)  # exact where probs is 0 or 1
    assert torch.equal(b[:, probs == 0].max(), torch.tensor(0.0))
    assert torch.equal(b[:, probs == 1].min(), torch.tensor(1.0))


def test_binarize_overall_mean():
    probs = torch.rand(200, 100, generator=torch.Generator().manual_seed(3))
    b = binarize(probs, torch.Generator().manual_seed(4))
    standard_error = math.sqrt(float((probs * (1 - probs)).sum())) / probs.numel()
    assert abs(float(b.mean() - probs.mean())) < 4 * standard_error


def test_binarize_same_seed_same_result(digits):
    x = digits.x_train
    first = binarize(x, torch.Generator().manual_seed(7))
    assert torch.equal(first, binarize(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, binarize(x, torch.Generator().manual_seed(8)))


def test_binarize_fixed_reproducible(digits):
    x = digits.x_test
    assert torch.equal(binarize_fixed(x), binarize_fixed(x, seed=0))
    assert torch.equal(binarize_fixed(x), binarize(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(binarize_fixed(x, seed=0), binarize_fixed(x, seed=1))


# ---------------------------------------------------------------- minibatches


@pytest.mark.parametrize("num_examples, batch_size, sizes", [(10, 3, [3, 3, 3, 1]), (6, 2, [2, 2, 2]), (2, 5, [2])])
def test_minibatches_cover_every_index_once(num_examples, batch_size, sizes):
    batches = list(minibatches(num_examples, batch_size, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == sizes
    assert all(b.dtype == torch.int64 for b in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(num_examples))


def test_minibatches_shuffle_is_seeded():
    def order(seed):
        return torch.cat(list(minibatches(100, 7, torch.Generator().manual_seed(seed)))).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0) != list(range(100))


def test_minibatches_without_generator_keep_order():
    batches = list(minibatches(5, 2, None, device="cpu"))
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4]]


def test_minibatches_empty():
    assert list(minibatches(0, 4, torch.Generator().manual_seed(0))) == []


@pytest.mark.parametrize("batch_size", [0, -3])
def test_minibatches_bad_batch_size(batch_size):
    with pytest.raises(InputError, match=f"batch_size {batch_size}: expected an integer >= 1"):
        list(minibatches(10, batch_size, None))


def test_the_validation_split_is_disjoint_from_train_and_test_and_fixed_by_the_seed(digits):
    split = data.validation_split(digits, 0.2, seed=3)
    assert split.x_test.shape[0] == round(0.2 * 1497) and split.x_train.shape[0] == 1497 - round(0.2 * 1497)
    rows = {tuple(row.tolist()) for row in digits.x_train}
    train, validation = ({tuple(row.tolist()) for row in x} for x in (split.x_train, split.x_test))
    assert train | validation <= rows and not train & validation  # the digits hold no duplicate images across splits
    assert not validation & {tuple(row.tolist()) for row in digits.x_test}
    assert len(train) + len(validation) == len(rows)
    again = data.validation_split(digits, 0.2, seed=3)
    assert torch.equal(again.x_test, split.x_test) and torch.equal(again.y_test, split.y_test)
    assert not torch.equal(data.validation_split(digits, 0.2, seed=4).x_test, split.x_test)
    state = torch.get_rng_state()
    data.validation_split(digits, 0.5, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
