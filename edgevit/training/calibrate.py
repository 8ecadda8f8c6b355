"""What a run fits on its validation split after training: the temperature that calibrates the
probabilities and, for a model with a "not a digit" class, the reject rule's threshold."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgevit.answer import DIGITS, Reject, fit_class_threshold, fit_threshold, rejected
from edgevit.calibration import fit_temperature, nll, softmax
from edgevit.data import Split
from edgevit.robustness import degraded_bank

# the reject threshold may turn away this share of the held-out digits (the target on test is 0.3%)...
MAX_FALSE_REJECTION = 0.001
MAX_DEGRADED_FALSE_REJECTION = 0.01  # ...and at most this share of damaged copies of them
VALIDATION_BANK_SEED = 1_000_003  # the damaged validation digits' seed, apart from the training bank's
BANK_WORKERS = 2  # processes making damaged images


def calibration(
    logits_of: Callable[[np.ndarray], np.ndarray],
    val: Split,
    num_classes: int,
    damaged_seed: int | None,
    negatives: np.ndarray | None = None,
) -> dict:
    """Metadata fitted on the validation split `val` through the model's `logits_of`: the temperature
    and, for a model with a "not a digit" class, the rule that turns away at most MAX_FALSE_REJECTION
    of these held-out digits: the highest digit-confidence threshold beside the class; or, given
    `damaged_seed` (a run that trained on damaged digits), the lowest threshold on the class's
    probability that also turns away at most MAX_DEGRADED_FALSE_REJECTION of damaged copies of them
    (the training generators: the robustness report's are others). Given held-out `negatives`, the
    share of them the rule turns away is recorded too. Empty without a validation split."""
    if not len(val):
        return {}
    logits = logits_of(val.images)
    t = fit_temperature(logits, val.labels)
    before, after = nll(logits, val.labels, 1.0), nll(logits, val.labels, t)
    out = {
        "temperature": {"value": t, "validation_images": len(val), "validation_nll": before, "validation_nll_calibrated": after}
    }
    if num_classes != DIGITS + 1:
        return out
    probs = softmax(logits, t)
    if damaged_seed is None:  # "not a digit": the class is the likeliest, or no digit likely enough
        threshold = fit_threshold(probs, Reject(DIGITS), MAX_FALSE_REJECTION)
        out["reject"] = {"class": DIGITS, "threshold": threshold, "max_false_rejection": MAX_FALSE_REJECTION}
        return out
    # "not a digit" when the class is more likely than the validation digits, clean and damaged, allow
    damaged, _, refused = degraded_bank(val, len(val), damaged_seed + VALIDATION_BANK_SEED, BANK_WORKERS)
    allowed = (
        fit_class_threshold(probs, DIGITS, MAX_FALSE_REJECTION),
        fit_class_threshold(softmax(logits_of(damaged), t), DIGITS, MAX_DEGRADED_FALSE_REJECTION),
    )
    out["reject"] = {
        "class": DIGITS,
        "class_threshold": max(allowed),
        "threshold": 0.0,
        "max_false_rejection": MAX_FALSE_REJECTION,
        "max_degraded_false_rejection": MAX_DEGRADED_FALSE_REJECTION,
        "degraded_validation_images": len(damaged) + refused,
    }
    if negatives is not None and len(negatives):
        caught = rejected(softmax(logits_of(negatives), t), Reject.from_metadata(out["reject"], num_classes))
        out["reject"] |= {"validation_negatives": len(negatives), "validation_negatives_rejected": float(caught.mean())}
    return out
