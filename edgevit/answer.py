"""From probabilities to an answer: a digit, or "not a digit".

A model trained with an extra class for non-digits (letters, scribbles, noise, shapes) says so with
that class (when it is the likeliest, or when its probability is over a threshold fitted on held-out
digits); the answer is also "not a digit" when no digit is likely enough (its calibrated
probability under a threshold fitted on held-out digits). The same rule runs in the C export (the
entry points return EDGEVIT_NOT_A_DIGIT) and so in the browser. Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DIGITS = 10
NOT_A_DIGIT = DIGITS  # what `answers` and the C entry points give for an image that is no digit
REJECT_CLASS = "class"  # reasons, as JSON and text show them
LOW_CONFIDENCE = "low confidence"


@dataclass(frozen=True)
class Reject:
    """How a weights file says "not a digit": its extra class (None without one), the probability of
    that class above which the answer is "not a digit" (None: when it is the likeliest class), and
    the lowest calibrated probability a digit may have (0: never rejected for that)."""

    cls: int | None = None
    threshold: float = 0.0
    class_threshold: float | None = None

    @classmethod
    def from_metadata(cls, value, num_classes: int) -> Reject:
        """The `reject` entry of a weights file's metadata, checked (ValueError naming the problem)."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ValueError("reject is not an object")
        index, threshold = value.get("class"), value.get("threshold", 0.0)
        whole = isinstance(index, int) and not isinstance(index, bool)
        if index is not None and (not whole or not DIGITS <= index == num_classes - 1):
            raise ValueError(f"reject class {index!r} is not the model's last class, after the digits")
        class_threshold = value.get("class_threshold")
        for name, v in (("threshold", threshold), ("class_threshold", 0.0 if class_threshold is None else class_threshold)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v < 1.0:
                raise ValueError(f"reject {name} {v!r} is not in [0, 1)")
        if class_threshold is not None and index is None:
            raise ValueError("a reject class_threshold needs a reject class")
        # rounded to float32, the type the probabilities have in every runtime: C and numpy then agree
        f32 = None if class_threshold is None else float(np.float32(class_threshold))
        return cls(index, float(np.float32(threshold)), f32)

    def by_class(self, probs: np.ndarray) -> np.ndarray:
        """(N, classes) -> which images the model's class for non-digits claims."""
        if self.cls is None:
            return np.zeros(len(probs), bool)
        if self.class_threshold is None:
            return probs.argmax(1) == self.cls
        return probs[:, self.cls] > np.float32(self.class_threshold)

    @property
    def active(self) -> bool:
        return self.cls is not None or self.threshold > 0


@dataclass(frozen=True)
class Answer:
    digit: int | None  # None: not a digit
    confidence: float  # the probability behind the answer: of the digit, or of "not a digit"
    reason: str | None = None  # why it is not a digit


def answer(probs: np.ndarray, reject: Reject, always_digit: bool = False) -> Answer:
    """One image's probabilities (classes,) -> its answer. `always_digit` forces the best digit."""
    best = int(np.argmax(probs[:DIGITS]))
    if always_digit or not reject.active:
        return Answer(best, float(probs[best]))
    if reject.by_class(probs[None])[0]:
        return Answer(None, float(probs[reject.cls]), f"{REJECT_CLASS}: it looks like no digit")
    if probs[best] < reject.threshold:
        reason = f"{LOW_CONFIDENCE}: the likeliest digit, {best}, has {100 * probs[best]:.1f}%"
        return Answer(None, float(1.0 - probs[best]), reason)
    return Answer(best, float(probs[best]))


def rejected(probs: np.ndarray, reject: Reject) -> np.ndarray:
    """(N, classes) -> which of the N images the rule answers "not a digit" (vectorised `answer`)."""
    return (probs[:, :DIGITS].max(1) < reject.threshold) | reject.by_class(probs)


def answers(probs: np.ndarray, reject: Reject) -> np.ndarray:
    """(N, classes) -> (N,) the digit of each image, or NOT_A_DIGIT: what the C entry points return."""
    return np.where(rejected(probs, reject), NOT_A_DIGIT, probs[:, :DIGITS].argmax(1))


def fit_class_threshold(digit_probs: np.ndarray, cls: int, max_false_rejection: float) -> float:
    """The lowest class threshold that rejects at most `max_false_rejection` of these held-out digits:
    the probability of class `cls` that only that many of them exceed."""
    scores = np.sort(digit_probs[:, cls].astype(np.float32))[::-1]
    allowed = math.floor(max_false_rejection * len(scores))
    return float(scores[min(allowed, len(scores) - 1)]) if len(scores) else 0.0


def fit_threshold(digit_probs: np.ndarray, reject: Reject, max_false_rejection: float) -> float:
    """The highest threshold that rejects at most `max_false_rejection` of these held-out digits
    (beyond those the reject class already takes): the more it rejects, the more non-digits it catches."""
    by_class = reject.by_class(digit_probs)
    budget = math.floor(max_false_rejection * len(digit_probs)) - int(by_class.sum())
    confidences = np.sort(digit_probs[~by_class, :DIGITS].max(1))
    if budget <= 0 or len(confidences) == 0:
        return 0.0
    # the (budget + 1)-th least confident digit: everything strictly below it, at most `budget`, goes
    return float(confidences[min(budget, len(confidences) - 1)])
