"""The banks behind "not a digit": the generators (tools/negatives.py, tools/positives.py) and the
bundled banks they made (data/negatives)."""

import sys

import numpy as np
from conftest import ROOT

from edgevit.data import read_idx, verify_manifest

sys.path.insert(0, str(ROOT / "tools"))
import negatives

BANKS = ROOT / "data" / "negatives"


def test_no_character_a_person_could_read_as_a_digit_is_drawn():
    assert not set(negatives.FONT_CHARS) & set(negatives.CONFUSABLE)
    assert not set(negatives.STROKES) & set(negatives.CONFUSABLE)
    assert set("0123456789") <= set(negatives.CONFUSABLE)


def test_a_bank_is_a_pure_function_of_split_and_seed():
    first, kinds, _ = negatives.bank("test", 3, seed=5)
    again, _, _ = negatives.bank("test", 3, seed=5)
    other, _, _ = negatives.bank("train", 3, seed=5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)  # the splits draw from different streams
    assert list(kinds) == list(negatives.KINDS[:3])


def test_the_bundled_banks_are_what_their_generator_wrote():
    verify_manifest(BANKS)
    train = read_idx(BANKS / "train-negatives-images-idx3-ubyte.gz")
    positives, labels = (read_idx(BANKS / f"train-positives-{k}-idx{n}-ubyte.gz") for k, n in (("images", 3), ("labels", 1)))
    test = read_idx(BANKS / "test-negatives-images-idx3-ubyte.gz")
    kinds = read_idx(BANKS / "test-negatives-kinds-idx1-ubyte.gz")
    assert train.shape == (19_954, 28, 28) and train.dtype == np.uint8
    assert positives.shape == (12_000, 28, 28) and labels.max() <= 9 and len(set(labels)) == 10
    assert test.shape == (2_969, 28, 28) and test.dtype == np.float32 and kinds.shape == (2_969,)
    redrawn, _, _ = negatives.bank("test", 2, seed=0)
    # the test bank's first images, drawn again here: preprocessing's float arithmetic may round the
    # last bit differently on another CPU's vector units than on the one that wrote the bank
    np.testing.assert_allclose(redrawn, test[:2], rtol=1e-5, atol=1e-5)
