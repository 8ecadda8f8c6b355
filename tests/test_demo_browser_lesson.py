"""The explorer's Query, Key and Value (edgevit/demo/site/lesson.js, headview.js, heads.js) in headless
Chromium: the numbers the page shows and returns are numpy's recomputation from the weights file, and
a knock-out gives the answer of Python's forward pass with the same mask. Marked `browser`, with
the fixtures of test_demo_browser (the site built from the shipped int8 weights, one Chromium)."""
# ruff: noqa: F811  (the imported fixtures are named again as the tests' parameters: that is how pytest passes them)

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from test_demo_browser import (  # noqa: F401 (fixtures: used as parameters)
    ATTENTION_TOLERANCE,
    DRAWINGS,
    PROB_TOLERANCE,
    WEIGHTS,
    as_answers,
    built,
    draw,
    driver,
    last_input,
    measured,
    open_page,
    patch_table,
    token_names,
    url,
)

from edgevit.answer import answers
from edgevit.data import load_dataset, normalize
from edgevit.qkv import attention_parts, knockout_mask
from edgevit.quant.codec import dequantize_int8
from edgevit.reference import numpy_forward
from edgevit.weights import ModelFile

pytestmark = pytest.mark.browser
QKV_TOLERANCE = 1e-4  # page (float32 C in WebAssembly) vs numpy (float64)
TEST_DIGITS = 8
KNOCKOUT = [5, 6, 9]
BLANK = [10]
PARTS = ("query", "key", "value", "scores", "attention")


@pytest.fixture(scope="module")
def model() -> ModelFile:
    return ModelFile.open(WEIGHTS)


def numpy_parts(model: ModelFile, pixels: np.ndarray, knockout: list[int] = ()) -> tuple[np.ndarray, dict]:
    """numpy's forward pass on the weights file's own numbers (int8 weights times their scales):
    probabilities (classes,) and each part stacked over layers, e.g. query (depth, heads, T, d)."""
    arrays = model.file.arrays()
    w = {name: a for name, a in arrays.items() if not name.endswith((".q", ".scale"))}
    for name in (n[: -len(".q")] for n in arrays if n.endswith(".q")):
        w[f"{name}.weight"] = dequantize_int8(arrays[f"{name}.q"], arrays[f"{name}.scale"])
    seen: list[dict] = []
    x = normalize(pixels[None], model.mean, model.std).astype(np.float64)
    mask = knockout_mask(list(knockout), model.config.tokens) if knockout else None
    logits = numpy_forward(w, model.config, x, mask, seen)[0] / model.temperature
    probs = np.exp(logits - logits.max())
    parts = {name: np.stack([s["weights" if name == "attention" else name][0] for s in seen]) for name in PARTS}
    return probs / probs.sum(), parts


def page_classify(driver, pixels: np.ndarray, options: dict | None = None) -> dict:
    out = driver.execute_script(
        "return window.edgevit.classify(arguments[0], arguments[1])", pixels.reshape(-1).tolist(), options or {}
    )
    # JSON has no infinity: a knocked-out key's score of -Infinity comes back as null
    out["scores"] = np.array([[[[-np.inf if v is None else v for v in r] for r in t] for t in h] for h in out["scores"]])
    return out


def test_page_query_key_value_scores_and_weights_equal_numpy(driver, url, built, model, measured):
    open_page(driver, url)
    # ms from navigation to a loaded model (WebAssembly compiled), and the bytes the page loads
    measured["ms_navigation_to_ready"] = driver.execute_script("return performance.now()")
    measured["site_bytes"] = sum(p.stat().st_size for p in built.iterdir() if not p.name.startswith("."))
    worst = dict.fromkeys(PARTS, 0.0)
    for pixels in load_dataset().test.images[:TEST_DIGITS].astype(np.float32):
        page = page_classify(driver, pixels)
        probs, want = numpy_parts(model, pixels)
        np.testing.assert_allclose(page["probs"], probs, atol=PROB_TOLERANCE)
        for name in PARTS:
            got = np.array(page[name], np.float64)
            assert got.shape == want[name].shape, name
            worst[name] = max(worst[name], float(np.abs(got - want[name]).max()))
    measured["max_diff_page_vs_numpy"] = worst
    assert max(worst.values()) <= QKV_TOLERANCE, worst


def test_knockout_and_blanking_give_pythons_answer(driver, url, model, measured):
    open_page(driver, url)
    vit = model.build()
    for pixels in load_dataset().test.images[TEST_DIGITS : 2 * TEST_DIGITS].astype(np.float32):
        page = page_classify(driver, pixels, {"knockout": KNOCKOUT})
        logits, parts = attention_parts(vit, normalize(pixels[None], model.mean, model.std), KNOCKOUT)
        probs = np.exp(logits / model.temperature - (logits / model.temperature).max())
        probs /= probs.sum()
        np.testing.assert_allclose(page["probs"], probs, atol=PROB_TOLERANCE)
        assert as_answers([page["digit"]])[0] == answers(probs[None], model.reject)[0]
        keys = [p + 1 for p in KNOCKOUT]
        assert np.isneginf(page["scores"][:, :, :, keys]).all()
        assert np.array_equal(np.array(page["attention"])[:, :, :, keys], np.zeros_like(page["scores"][:, :, :, keys]))
        np.testing.assert_allclose(page["attention"], np.stack([p.weights for p in parts]), atol=ATTENTION_TOLERANCE)
        # blanking is the same as handing the model the image with those pixels at 0
        blanked = pixels.copy()
        for p in BLANK:
            blanked[(p // 4) * 7 : (p // 4 + 1) * 7, (p % 4) * 7 : (p % 4 + 1) * 7] = 0
        np.testing.assert_allclose(
            page_classify(driver, pixels, {"blank": BLANK})["probs"], numpy_parts(model, blanked)[0], atol=PROB_TOLERANCE
        )
    with pytest.raises(Exception, match="knockout: 16 is not a patch"):
        page_classify(driver, pixels, {"knockout": [16]})


def choose(driver, layer: int, head: int, patch: int) -> None:
    Select(driver.find_element(By.ID, "layer")).select_by_value(str(layer))
    Select(driver.find_element(By.ID, "head")).select_by_value(str(head))
    driver.find_element(By.CSS_SELECTOR, f"#patches [data-patch='{patch}']").click()


def values(driver, selector: str) -> np.ndarray:
    return np.array([float(e.get_attribute("data-value")) for e in driver.find_elements(By.CSS_SELECTOR, selector)])


def test_one_weight_taken_apart_with_the_runs_numbers(driver, url, model):
    """Query and key bars, products, sum, score, the softmax row and the value mix: the drawn digit's own
    numbers (numpy's, from the input the page saw), and the softmax column equals the table's weights."""
    open_page(driver, url)
    draw(driver, DRAWINGS["7"][1], "pen")
    layer, head, patch, key = 1, 2, 5, 3  # key token 3 is patch r0c2
    choose(driver, layer, head, patch)
    driver.find_element(By.CSS_SELECTOR, f"#softmax-body tr:nth-child({key + 1}) button").click()
    _, want = numpy_parts(model, last_input(driver))
    q, k = want["query"][layer, head, patch + 1], want["key"][layer, head, key]
    assert np.abs(values(driver, "#weight-q li") - q).max() <= QKV_TOLERANCE
    assert np.abs(values(driver, "#weight-k li") - k).max() <= QKV_TOLERANCE
    assert np.abs(values(driver, "#weight-products li") - q * k).max() <= QKV_TOLERANCE
    assert abs(values(driver, "#weight-dot")[0] - q @ k) <= QKV_TOLERANCE
    assert abs(values(driver, "#weight-score")[0] - want["scores"][layer, head, patch + 1, key]) <= QKV_TOLERANCE
    columns = np.array([values(driver, f"#softmax-body td:nth-of-type({c})") for c in range(1, 5)])
    scores, _, softmax, weights = columns
    assert np.abs(scores - want["scores"][layer, head, patch + 1]).max() <= QKV_TOLERANCE
    table = patch_table(driver)[f"Head {head + 1}"]
    assert np.abs(softmax - [table[n] for n in token_names()]).max() <= ATTENTION_TOLERANCE
    assert np.abs(weights - want["attention"][layer, head, patch + 1]).max() <= ATTENTION_TOLERANCE
    mixed = want["attention"][layer, head, patch + 1] @ want["value"][layer, head]
    assert np.abs(values(driver, "#value-mix li") - mixed).max() <= QKV_TOLERANCE
    lesson = driver.find_element(By.ID, "lesson-steps").text
    assert f"{want['scores'][layer, head, patch + 1, key]:.4f}" in lesson and "r1c1" in lesson and "r0c2" in lesson


def direction(patch: int, key: int) -> str:
    """What a patch looks at hardest, as heads.js names it."""
    if key == 0:
        return "the class token"
    moves = {(0, 1): "right", (0, -1): "left", (-1, 0): "above", (1, 0): "below", (0, 0): "themselves"}
    step = ((key - 1) // 4 - patch // 4, (key - 1) % 4 - patch % 4)
    return moves.get(step, f"patch r{(key - 1) // 4}c{(key - 1) % 4}")


def test_head_view_selects_a_head_and_describes_each_from_its_numbers(driver, url, model):
    open_page(driver, url)
    draw(driver, DRAWINGS["0"][1], "touch")
    cells = driver.find_elements(By.CSS_SELECTOR, "#head-grid .head-cell")
    cfg = model.config
    assert len(cells) == cfg.depth * cfg.heads
    driver.find_element(By.CSS_SELECTOR, "#head-grid [data-layer='2'][data-head='3']").click()
    assert Select(driver.find_element(By.ID, "layer")).first_selected_option.get_attribute("value") == "2"
    assert Select(driver.find_element(By.ID, "head")).first_selected_option.get_attribute("value") == "3"
    assert driver.find_element(By.CSS_SELECTOR, "#head-grid [aria-pressed='true']").get_attribute("data-layer") == "2"
    _, want = numpy_parts(model, last_input(driver))
    sentences = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#head-sentences li")]
    assert len(sentences) == cfg.depth * cfg.heads
    for (layer, head), sentence in zip(np.ndindex(cfg.depth, cfg.heads), sentences, strict=True):
        assert sentence.startswith(f"layer {layer + 1}, head {head + 1}: ")
        best = want["attention"][layer, head, 1:].argmax(-1)  # each patch's hardest look
        counts = Counter(direction(p, int(k)) for p, k in enumerate(best))
        claimed = re.search(r"\((\d+) of 16\)", sentence)
        assert claimed is None or int(claimed.group(1)) == max(counts.values()), sentence


def test_knockout_controls_change_the_answer_as_python_does(driver, url, model):
    open_page(driver, url)
    draw(driver, DRAWINGS["7"][1], "pen")
    pixels = last_input(driver)
    choose(driver, 3, 0, 6)
    driver.find_element(By.ID, "knock").click()  # as a key, the default
    choose(driver, 3, 0, 9)
    driver.find_element(By.CSS_SELECTOR, "input[name='knockout-mode'][value='pixels']").click()
    driver.find_element(By.ID, "knock").click()
    summary = driver.find_element(By.ID, "knockout-summary").text
    assert "Knocked out as keys: r1c2." in summary and "Pixels blanked: r2c1." in summary
    blanked = pixels.copy()
    blanked[14:21, 7:14] = 0  # r2c1
    vit = model.build()
    logits, parts = attention_parts(vit, normalize(blanked[None], model.mean, model.std), [6])
    probs = np.exp(logits / model.temperature - (logits / model.temperature).max())
    expected = answers((probs / probs.sum())[None], model.reject)[0]  # a digit, or "not a digit"
    assert driver.find_element(By.ID, "prediction").text == str(expected)
    got = np.array([patch_table(driver)["Head 1"][n] for n in token_names()])
    assert np.abs(got - parts[3].weights[0, 10]).max() <= ATTENTION_TOLERANCE
    driver.find_element(By.ID, "restore").click()
    assert "Knocked out as keys: none. Pixels blanked: none." in driver.find_element(By.ID, "knockout-summary").text
