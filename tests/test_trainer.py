import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import step_losses

from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig
from edgevit.training.trainer import Bank, Trainer, TrainSettings, lr_at

TINY = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.1)


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 10, 1e-3, 1e-5) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[55] == pytest.approx((1e-3 + 1e-5) / 2) and lrs[100] == pytest.approx(1e-5)


@pytest.mark.slow
def test_a_few_steps_on_a_small_subset_lower_the_loss(mnist):
    settings = TrainSettings(epochs=15, batch_size=32, limit=64, lr=3e-3, augment=False, warmup_epochs=1)
    trainer = Trainer(ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32), settings, mnist)
    losses = step_losses(trainer)
    assert len(losses) == 30
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4]), losses


def test_settings_and_data_are_checked(mnist):
    with pytest.raises(EdgeViTError, match="exceeds the 10 training images"):
        Trainer(TINY, TrainSettings(batch_size=16, limit=10), mnist).steps_per_epoch  # noqa: B018
    with pytest.raises(EdgeViTError, match="--epochs must be a whole number of at least 1, not 0"):
        TrainSettings(epochs=0)


def test_the_last_training_images_are_held_out_and_calibrate_the_model(mnist):
    trainer = Trainer(TINY, TrainSettings(validation=500, limit=1000), mnist)
    assert len(trainer.validation_split) == 500 and len(trainer.train_split) == 1000
    np.testing.assert_array_equal(trainer.validation_split.images, mnist.train.images[-500:])
    fitted = trainer.calibration()["temperature"]
    assert fitted["validation_images"] == 500 and fitted["value"] > 0
    assert fitted["validation_nll_calibrated"] <= fitted["validation_nll"]
    assert Trainer(TINY, TrainSettings(validation=0), mnist).calibration() == {}


def test_negatives_join_every_batch_as_the_not_a_digit_class(mnist):
    rng = np.random.default_rng(0)
    negatives = Bank(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), Path("noise"))
    eleven = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, num_classes=11)
    positives = Bank(mnist.train.images[:30], Path("digits"), mnist.train.labels[:30])
    settings = TrainSettings(epochs=1, batch_size=16, negatives_per_batch=4, positives_per_batch=2, limit=100, validation=200)
    trainer = Trainer(eleven, settings, mnist, negatives=negatives, positives=positives)
    assert trainer.steps_per_epoch == 100 // 10  # every digit once per epoch, 10 of them per batch
    x, y = trainer.batch(0, 0)
    assert x.shape == (16, 1, 28, 28) and y[:12].max() < 10 and (y[12:] == 10).all()  # 10 digits, 2 positives, 4 negatives
    assert set(y[10:12]) <= set(mnist.train.labels[:30])
    assert np.array_equal(trainer.batch(0, 0)[0], x)  # a pure function of (seed, epoch, step): resumable
    assert len(step_losses(trainer)) == 10
    reject = trainer.calibration()["reject"]
    assert reject["class"] == 10 and 0 <= reject["threshold"] < 1
    with pytest.raises(EdgeViTError, match="needs 11 classes"):
        Trainer(TINY, settings, mnist, negatives=negatives, positives=positives)
    with pytest.raises(EdgeViTError, match="training with negatives needs a bank"):
        Trainer(eleven, settings, mnist, positives=positives)


def test_the_shipped_weights_are_the_moving_average(mnist):
    trainer = Trainer(TINY, TrainSettings(epochs=1, batch_size=16, limit=64, ema=0.9, validation=100), mnist)
    before = {k: v.numpy() for k, v in trainer.shipped_weights.items()}
    step_losses(trainer)
    raw, averaged = trainer.params, trainer.shipped_weights
    name = "blocks.0.attn.query.weight"
    expected_direction = raw[name].numpy() - before[name]
    moved = averaged[name].numpy() - before[name]
    assert np.abs(moved).max() > 0 and np.abs(moved).max() < np.abs(expected_direction).max()  # behind the weights
    assert not np.array_equal(averaged[name].numpy(), raw[name].numpy())


def test_damaged_digits_join_every_batch_with_their_labels(mnist):
    rng = np.random.default_rng(1)
    eleven = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, num_classes=11)
    negatives = Bank(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), Path("noise"))
    labels = np.array([3] * 20 + [10] * 10)  # damaged digits, then damaged non-digits
    degraded = Bank(mnist.train.images[:30], Path("generated"), labels)
    settings = TrainSettings(
        epochs=1,
        batch_size=16,
        negatives_per_batch=2,
        degraded_per_batch=6,
        degraded_images=20,
        degraded_negatives=10,
        limit=80,
        validation=200,
    )
    trainer = Trainer(eleven, settings, mnist, negatives=negatives, degraded=degraded)
    assert trainer.steps_per_epoch == 80 // 8
    x, y = trainer.batch(0, 0)
    assert x.shape == (16, 1, 28, 28) and (y[8:10] == 10).all() and set(y[10:]) <= {3, 10}  # digits, negatives, damaged
    reject = trainer.calibration()["reject"]  # fitted on the validation digits and on damaged copies of them
    assert reject["degraded_validation_images"] == 200 and 0 <= reject["threshold"] < 1
    with pytest.raises(EdgeViTError, match="needs a bank of them"):
        TrainSettings(batch_size=16, degraded_per_batch=2)
    with pytest.raises(EdgeViTError, match="need negatives: --negatives-per-batch"):
        TrainSettings(batch_size=16, degraded_per_batch=2, degraded_images=5, degraded_negatives=5)
    with pytest.raises(EdgeViTError, match="training with degraded needs a bank"):
        Trainer(eleven, settings, mnist, negatives=negatives)
