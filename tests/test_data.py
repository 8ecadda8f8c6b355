import gzip

import numpy as np
import pytest
from conftest import idx_bytes, write_dataset

from edgevit.data import augment, load_dataset, normalize, parse_idx, random_affines, read_idx, warp_affine
from edgevit.errors import EdgeViTError
from edgevit.resources import bundled_mnist

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_parse_idx_reads_dims_and_data():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(images), "x"), images)
    ints = np.array([1, -2, 70000], dtype=np.int64)
    out = parse_idx(idx_bytes(ints, 0x0C), "x")
    assert out.tolist() == [1, -2, 70000] and out.dtype == np.int32


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-1], "truncated IDX data"),
        (lambda b: b + b"\0", "oversized IDX file"),
        (lambda b: b"\x01" + b[1:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b[:2], "truncated IDX file"),
    ],
)
def test_parse_idx_rejects_bad_files(mutate, message):
    raw = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(EdgeViTError, match=message) as e:
        parse_idx(mutate(raw), "some-file")
    assert "some-file" in str(e.value)


def test_read_idx_gunzips_by_content_and_names_corrupt_gzip(tmp_path):
    labels = np.array([3, 1, 4], np.uint8)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(labels))  # a misleading name: not compressed
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(labels)))
    assert read_idx(tmp_path / "plain.gz").tolist() == [3, 1, 4]
    assert read_idx(tmp_path / "packed").tolist() == [3, 1, 4]
    (tmp_path / "cut.gz").write_bytes(gzip.compress(idx_bytes(labels))[:-6])
    with pytest.raises(EdgeViTError, match=r"cut\.gz: corrupt gzip"):
        read_idx(tmp_path / "cut.gz")


def test_bundled_mnist_matches_its_readme(mnist):
    assert mnist.train.images.shape == (60000, 28, 28) and mnist.test.images.shape == (10000, 28, 28)
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    mean, std = mnist.pixel_stats()
    assert abs(mean - 0.1307) < 1e-4 and abs(std - 0.3081) < 1e-4


def test_checksum_mismatch_is_refused(tmp_path):
    for f in bundled_mnist().iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(labels.read_bytes())
    raw[-10] ^= 1
    labels.write_bytes(bytes(raw))
    with pytest.raises(EdgeViTError, match=r"t10k-labels-idx1-ubyte.gz: sha256 .* does not match"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_any_directory_of_idx_files_loads(tmp_path, gz):
    arrays = write_dataset(tmp_path, gz=gz)
    data = load_dataset(tmp_path)
    assert np.array_equal(data.train.images, arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.test.labels, arrays["t10k-labels-idx1-ubyte"])


def test_data_env_variable_is_used(tmp_path, monkeypatch):
    write_dataset(tmp_path, n_train=5)
    monkeypatch.setenv("EDGEVIT_DATA", str(tmp_path))
    assert len(load_dataset().train) == 5


def test_emnist_names_are_found_and_transposed(tmp_path):
    arrays = write_dataset(tmp_path, prefix="emnist-digits-")
    data = load_dataset(tmp_path)
    assert np.array_equal(data.train.images, arrays["train-images-idx3-ubyte"].transpose(0, 2, 1))


def test_missing_and_inconsistent_files_name_the_problem(tmp_path):
    with pytest.raises(EdgeViTError, match="data directory not found"):
        load_dataset(tmp_path / "nope")
    write_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(EdgeViTError, match="no t10k-labels-idx1-ubyte"):
        load_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(EdgeViTError, match="32 images but 3 labels"):
        load_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(32, 12, np.uint8))))
    with pytest.raises(EdgeViTError, match=r"label 12 is outside 0\.\.9"):
        load_dataset(tmp_path)


def test_normalize_standardises_to_nchw():
    x = normalize(np.array([[[0, 255]]], np.uint8), mean=0.5, std=0.25)
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [-2.0, 2.0])


def test_warp_identity_and_integer_shift_are_exact(mnist):
    x = mnist.train.images[:8]
    assert np.array_equal(warp_affine(x, np.repeat(IDENTITY[None], 8, 0)), x)
    shift = IDENTITY.copy()
    shift[:, 2] = [-2, 1]  # sample from (x-2, y+1): content moves 2 right and 1 up
    expected = np.zeros_like(x)
    expected[:, :-1, 2:] = x[:, 1:, :-2]
    assert np.array_equal(warp_affine(x, np.repeat(shift[None], 8, 0)), expected)


def test_warp_quarter_turn_matches_rot90(mnist):
    x = mnist.train.images[:4]
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # output (x, y) samples input (-y, x)
    np.testing.assert_allclose(warp_affine(x, np.repeat(turn[None], 4, 0)), np.rot90(x, k=1, axes=(1, 2)), atol=1e-3)


def test_augmentation_is_small_seeded_and_vectorised(mnist):
    x = mnist.train.images[:256]
    a = augment(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.array_equal(a, augment(x, np.random.default_rng(1)))
    assert not np.array_equal(a, augment(x, np.random.default_rng(2)))
    ink_ratio = a.sum((1, 2)) / x.sum((1, 2))  # scale within 0.9..1.1 keeps the ink area within ~0.8..1.2
    assert ink_ratio.min() > 0.7 and ink_ratio.max() < 1.3
    m = random_affines(np.random.default_rng(0), 1000)
    assert np.abs(np.linalg.det(m[:, :, :2])).min() > 1 / 1.1**2 - 1e-6
