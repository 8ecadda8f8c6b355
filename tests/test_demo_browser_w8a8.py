"""The explorer built from the w8a8 weights in headless Chromium: its WebAssembly runs the int8
products on i32x4.dot_i16x8_s (templates/int8_gemm.c), gives the Python runtime's answers, and is
timed against the explorer of the shipped int8 weights in the same browser.

Uses the fixtures of test_demo_browser (its Chromium, the digits, the int8 site)."""
# ruff: noqa: F811  (the imported fixtures are named again as the tests' parameters: that is how pytest passes them)

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, reject_rule
from test_demo_browser import (  # noqa: F401 (fixtures: used as parameters)
    LATENCY_CALLS,
    LATENCY_LIMIT_MS,
    WARM_UP_CALLS,
    as_answers,
    built,
    classify_each,
    digits,
    driver,
    measured,
    open_page,
    served,
    url,
)

from edgevit.answer import answers
from edgevit.demo import site

W8A8 = ROOT / "weights" / "edgevit-mnist-w8a8.safetensors"
# w8a8 rounds activations to int8: float noise at a rounding boundary moves one integer, so the
# probabilities may differ by up to about 1e-3 (as the C runtime's do, tests/test_export.py)
W8A8_PROB_TOLERANCE = 5e-3

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def w8a8_url(tmp_path_factory):
    with served(site.write_site(W8A8, tmp_path_factory.mktemp("w8a8") / "site")) as address:
        yield address


def median_ms(driver, pixels: np.ndarray) -> float:
    """The median time of the page's own WebAssembly call (what the page shows) over LATENCY_CALLS."""
    return driver.execute_script(
        """
        const [pixels, warmUp, calls] = arguments;
        for (let i = 0; i < warmUp; i++) window.edgevit.classify(pixels);
        const ms = [];
        for (let i = 0; i < calls; i++) ms.push(window.edgevit.classify(pixels).ms);
        ms.sort((a, b) => a - b);
        return ms[Math.floor(calls / 2)];
        """,
        pixels.reshape(-1).tolist(),
        WARM_UP_CALLS,
        LATENCY_CALLS,
    )


def test_w8a8_page_gives_python_answers(driver, w8a8_url, digits, measured):
    from edgevit.runtime import Classifier

    open_page(driver, w8a8_url)
    out = classify_each(driver, digits)
    said, probs = as_answers(out["digits"]), np.array(out["probs"], np.float32)
    expected = Classifier(W8A8, cache_dir=None, device="CPU").predict(digits).probs
    measured["w8a8_max_prob_diff_vs_tinygrad"] = float(np.abs(probs - expected).max())
    np.testing.assert_array_equal(said, answers(expected, reject_rule(W8A8)))
    assert measured["w8a8_max_prob_diff_vs_tinygrad"] <= W8A8_PROB_TOLERANCE


def test_w8a8_page_against_the_int8_page_in_the_same_browser(driver, url, w8a8_url, digits, measured):
    """Interleaved, three times each: the same machine's noise on both."""
    times = {"int8": [], "w8a8": []}
    for _ in range(3):
        for scheme, page in (("int8", url), ("w8a8", w8a8_url)):
            open_page(driver, page)
            times[scheme].append(median_ms(driver, digits[0]))
    measured["browser"] = driver.capabilities.get("browserVersion")
    measured["median_ms_int8_page"] = float(np.median(times["int8"]))
    measured["median_ms_w8a8_page"] = float(np.median(times["w8a8"]))
    measured["w8a8_speedup_over_int8_page"] = measured["median_ms_int8_page"] / measured["median_ms_w8a8_page"]
    assert measured["median_ms_w8a8_page"] < LATENCY_LIMIT_MS
