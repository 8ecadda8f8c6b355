"""The explorer's WebGPU engine in headless Chromium with WebGPU on (SwiftShader, Chromium's CPU
implementation of WebGPU), against EdgeViT's Python runtime, and its fallback to WebAssembly.

Uses the fixtures of test_demo_browser (the site built from the shipped int8 weights; its Chromium,
which has no WebGPU) and one more Chromium started with --enable-unsafe-webgpu."""
# ruff: noqa: F811  (the imported fixtures are named again as the tests' parameters: that is how pytest passes them)

from __future__ import annotations

import json
import shutil
import tempfile

import numpy as np
import pytest
from conftest import reject_rule
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_demo_browser import (  # noqa: F401 (fixtures: used as parameters)
    ATTENTION_TOLERANCE,
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    DRAWINGS,
    PROB_TOLERANCE,
    WEIGHTS,
    as_answers,
    built,
    classifier,
    draw,
    driver,
    measured,
    next_frames,
    open_page,
    url,
)
from test_demo_browser_lesson import QKV_TOLERANCE, model, numpy_parts, page_classify  # noqa: F401

from edgevit.answer import answers
from edgevit.data import load_dataset
from edgevit.demo import site

pytestmark = pytest.mark.browser
TEST_IMAGES = 200  # MNIST test digits through the WebGPU engine
PARTS_IMAGES = 4  # of them, also query, key, value and scores against numpy
WEBGPU_FLAGS = ("--enable-unsafe-webgpu",)  # Chromium's WebGPU on Linux: SwiftShader without a GPU
WAIT_S = 60  # SwiftShader compiles the kernels on the page's first WebGPU use


@pytest.fixture(scope="module")
def gpu_driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, *WEBGPU_FLAGS):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="edgevit-chromium-webgpu-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    browser.set_script_timeout(600)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


def engine(driver) -> str:
    return driver.execute_script("return window.edgevit.engine")


def test_webgpu_engine_gives_pythons_answers_probabilities_and_attention(gpu_driver, url, classifier, measured):
    open_page(gpu_driver, url + "?engine=webgpu")
    assert engine(gpu_driver) == "webgpu"
    images = load_dataset().test.images[:TEST_IMAGES].astype(np.float32)
    out = gpu_driver.execute_script(
        """
        const [images, pixels] = arguments;
        const digits = [], probs = [], attention = [], ms = [], engines = new Set();
        for (let i = 0; i * pixels < images.length; i++) {
          const r = await window.edgevit.classify(images.slice(i * pixels, (i + 1) * pixels));
          digits.push(r.digit);
          probs.push(r.probs);
          attention.push(r.attention.flat(3));
          ms.push(r.ms);
          engines.add(r.engine);
        }
        return {digits, probs, attention, ms, engines: [...engines]};
        """,
        images.reshape(-1).tolist(),
        images[0].size,
    )
    expected = classifier.predict(images)
    probs, attention = np.array(out["probs"], np.float32), np.array(out["attention"], np.float32)
    prob_diff = float(np.abs(probs - expected.probs).max())
    attention_diff = float(np.abs(attention - expected.attention.transpose(1, 0, 2, 3, 4).reshape(len(images), -1)).max())
    measured["webgpu_images"] = len(images)
    measured["webgpu_max_prob_diff_vs_tinygrad"] = prob_diff
    measured["webgpu_max_attention_diff_vs_tinygrad"] = attention_diff
    measured["webgpu_median_ms_swiftshader"] = float(np.median(out["ms"][1:]))
    assert out["engines"] == ["webgpu"]
    assert (as_answers(out["digits"]) == answers(expected.probs, reject_rule(WEIGHTS))).all()
    assert prob_diff <= PROB_TOLERANCE
    assert attention_diff <= ATTENTION_TOLERANCE


def test_webgpu_query_key_value_scores_and_knockout_equal_numpy(gpu_driver, url, model, measured):
    open_page(gpu_driver, url + "?engine=webgpu")
    worst = 0.0
    for i, pixels in enumerate(load_dataset().test.images[:PARTS_IMAGES].astype(np.float32)):
        knockout = [i, 5 + i]  # knocked-out keys: the mask input of the WGSL graph
        page = page_classify(gpu_driver, pixels, {"knockout": knockout})
        assert page["engine"] == "webgpu"
        probs, want = numpy_parts(model, pixels, knockout)
        np.testing.assert_allclose(page["probs"], probs, atol=PROB_TOLERANCE)
        for name, expected in want.items():
            got = np.array(page[name], np.float64)
            finite = np.isfinite(expected)
            assert (np.isfinite(got) == finite).all(), name  # -inf exactly where keys are knocked out
            worst = max(worst, float(np.abs(got[finite] - expected[finite]).max()))
    measured["webgpu_max_qkv_diff_vs_numpy"] = worst
    assert worst <= QKV_TOLERANCE


def test_emulated_adapter_starts_on_webassembly_and_the_user_can_switch(gpu_driver, url, classifier):
    """SwiftShader is a CPU emulation: the page starts on WebAssembly, offers WebGPU, and switches."""
    open_page(gpu_driver, url)
    assert engine(gpu_driver) == "wasm"
    select = Select(gpu_driver.find_element(By.ID, "engine"))
    webgpu = gpu_driver.find_element(By.CSS_SELECTOR, "#engine option[value='webgpu']")
    assert webgpu.is_enabled() and "CPU emulation" in webgpu.text
    select.select_by_value("webgpu")
    WebDriverWait(gpu_driver, WAIT_S).until(lambda d: engine(d) == "webgpu")
    strokes, kind = DRAWINGS["7"][1], DRAWINGS["7"][0]
    draw(gpu_driver, strokes, kind)
    WebDriverWait(gpu_driver, WAIT_S).until(lambda d: "WebGPU" in d.find_element(By.ID, "timing").text)
    pixels = np.array(gpu_driver.execute_script("return window.edgevit.lastInput()"), np.float32).reshape(28, 28)
    want = answers(classifier.predict(pixels[None]).probs, reject_rule(WEIGHTS))[0]
    assert gpu_driver.find_element(By.ID, "prediction").text == str(want)
    select.select_by_value("wasm")
    WebDriverWait(gpu_driver, WAIT_S).until(lambda d: engine(d) == "wasm")


def test_without_webgpu_the_page_falls_back_to_webassembly(driver, url, classifier):
    """The suite's other Chromium has no WebGPU: ?engine=webgpu answers from WebAssembly and says why."""
    open_page(driver, url + "?engine=webgpu")
    assert engine(driver) == "wasm"
    assert "WebGPU cannot run here" in driver.find_element(By.ID, "engine-note").text
    assert not driver.find_element(By.CSS_SELECTOR, "#engine option[value='webgpu']").is_enabled()
    pixels = load_dataset().test.images[0].astype(np.float32)
    page = driver.execute_script("return window.edgevit.classify(arguments[0])", pixels.reshape(-1).tolist())
    assert page["engine"] == "wasm"
    assert as_answers([page["digit"]])[0] == answers(classifier.predict(pixels[None]).probs, reject_rule(WEIGHTS))[0]


def test_webgpu_page_requests_nothing_outside_its_origin(gpu_driver, url):
    gpu_driver.get_log("performance")  # drop what earlier tests logged
    open_page(gpu_driver, url + "?engine=webgpu")
    draw(gpu_driver, DRAWINGS["1"][1], "mouse")
    next_frames(gpu_driver)
    events = [json.loads(entry["message"])["message"] for entry in gpu_driver.get_log("performance")]
    requested = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    outside = [u for u in requested if not (u.startswith(url) or u.startswith("data:"))]
    assert not outside, f"requests outside {url}: {outside}"
    assert {url + site.WEBGPU_GRAPH, url + site.WEBGPU_WEIGHTS} <= set(requested)
    assert not [e for e in gpu_driver.get_log("browser") if e["level"] == "SEVERE"]
