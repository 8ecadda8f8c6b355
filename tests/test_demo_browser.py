"""The attention explorer in a real browser (headless Chromium), against EdgeViT's Python runtime.

`make test-browser` runs these (marked `browser`): it installs Debian's chromium and chromium-driver
and selenium first. The tests build the site from the shipped int8 weights, serve it on 127.0.0.1,
and drive the page. Measured numbers (latency, differences) are printed at the end; the screenshot
goes to $EDGEVIT_SCREENSHOT (docs/explorer.png when regenerating it) or a temporary file.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, reject_rule
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from edgevit.answer import NOT_A_DIGIT, answers
from edgevit.data import load_negatives
from edgevit.demo import server, site
from edgevit.resources import shipped_weights

WEIGHTS = shipped_weights()
SCREENSHOT = Path(os.environ.get("EDGEVIT_SCREENSHOT") or Path(tempfile.gettempdir()) / "edgevit-explorer.png")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WINDOW_HEIGHT = 6400  # CSS pixels: tall enough for the whole page in one screenshot
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # needed as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no update checks or field trials: the request log is the page's own
    "--disable-component-update",
    "--disable-sync",
    f"--window-size=1280,{WINDOW_HEIGHT}",
)
MNIST_IMAGES = 200
NEGATIVE_IMAGES = 300  # of the held-out non-digits: every kind, 50 each
LATENCY_CALLS = 200
WARM_UP_CALLS = 50  # V8 compiles WebAssembly in tiers: the first calls run the baseline compiler
PROB_TOLERANCE = 1e-4  # page vs tinygrad runtime
ATTENTION_TOLERANCE = 1e-4
NATIVE_TOLERANCE = 1e-5  # page vs the same C built natively: only exp2f's last bits differ
# preprocessing, page (JS) vs Python on the same PNG, on the 0-255 scale. Measured: at most 5e-4
# (float32 summation order), so 0.01 leaves room for other browsers' Math.sin and Math.exp.
PREPROCESS_MAX_DIFF = 0.01
PREPROCESS_MEAN_DIFF = 1e-3
LATENCY_LIMIT_MS = 5.0  # a loose bound for a shared 2-core machine; the target is under 1 ms
PHONE = (390, 844)  # CSS pixels of a common phone
PAD = 280  # the pad's bitmap size (index.html)
PEN_WIDTH = 18  # explorer.js
INK_SLACK = 2  # pixels: anti-aliased edges and rounding of pointer coordinates

# digits drawn as polylines in pad pixels, each stroke a list of (x, y), with the pointer that draws it
DRAWINGS = {
    "1": ("mouse", [[(118, 78), (146, 48), (146, 236)]]),
    "7": ("pen", [[(72, 58), (206, 58), (150, 150), (118, 238)]]),
    "0": (
        "touch",
        [[(140 + 62 * np.sin(t), 140 - 92 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 33)]],
    ),
}
POINTER_KINDS = {"mouse": interaction.POINTER_MOUSE, "pen": interaction.POINTER_PEN, "touch": interaction.POINTER_TOUCH}

pytestmark = pytest.mark.browser


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured():
    """Numbers worth reporting, printed and saved when the module is done."""
    numbers: dict = {}
    yield numbers
    print("\n" + json.dumps(numbers, indent=2))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return site.write_site(WEIGHTS, tmp_path_factory.mktemp("site") / "site")


@contextlib.contextmanager
def served(site_dir: Path):
    """The site at `site_dir` on a free port of 127.0.0.1, for as long as the block runs: its URL."""
    httpd = server.make_server(site_dir, 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{server.HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(scope="module")
def url(built):
    with served(built) as address:
        yield address


@pytest.fixture(scope="module")
def driver():
    assert CHROMIUM and CHROMEDRIVER, "needs chromium and chromium-driver: make test-browser installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="edgevit-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def classifier():
    from edgevit.runtime import Classifier

    return Classifier(WEIGHTS, cache_dir=None, device="CPU")


@pytest.fixture(scope="module")
def digits(degraded):
    """MNIST test digits, then damaged ones (two of every kind and severity of the held-out set)."""
    from edgevit.data import load_dataset

    return np.concatenate([load_dataset().test.images[:MNIST_IMAGES], degraded]).astype(np.float32)


@pytest.fixture(scope="module")
def page_results(driver, url, digits):
    """window.edgevit.classify on every test image: digits, probs (N, C), attention (N, depth, heads, T, T)."""
    open_page(driver, url)
    config = driver.execute_script("return fetch('model.json').then((r) => r.json())")
    out = driver.execute_script(
        """
        const [images, pixels, shape] = arguments;
        const digits = [], probs = [];
        const size = shape.reduce((a, b) => a * b);
        const attention = new Float32Array((images.length / pixels) * size);
        for (let i = 0; i * pixels < images.length; i++) {
          const r = window.edgevit.classify(images.slice(i * pixels, (i + 1) * pixels));
          const got = [r.attention.length, r.attention[0].length, r.attention[0][0].length, r.attention[0][0][0].length];
          if (got.join() !== shape.join()) throw new Error(`attention shaped ${got}, expected ${shape}`);
          digits.push(r.digit);
          probs.push(r.probs);
          attention.set(r.attention.flat(3), i * size);
        }
        // a few MB of floats travel faster as base64 than as JSON numbers
        const bytes = new Uint8Array(attention.buffer);
        let binary = "";
        for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        return {digits, probs, attention: btoa(binary)};
        """,
        digits.reshape(-1).tolist(),
        config["image_size"] ** 2,
        [config["depth"], config["heads"], config["tokens"], config["tokens"]],
    )
    n = len(digits)
    attention = np.frombuffer(base64.b64decode(out["attention"]), np.float32)
    shape = (n, config["depth"], config["heads"], config["tokens"], config["tokens"])
    return as_answers(out["digits"]), np.array(out["probs"], np.float32), attention.reshape(shape)


def as_answers(digits: list) -> np.ndarray:
    """The page's digits (null: not a digit) as edgevit.answer.answers gives them."""
    return np.array([NOT_A_DIGIT if d is None else d for d in digits])


# --- helpers -------------------------------------------------------------------------------------
def classify_each(driver, images: np.ndarray) -> dict[str, list]:
    """window.edgevit.classify on each image, one call each: the digits (null: not a digit), the
    probabilities and the confidences."""
    return driver.execute_script(
        """
        const [images, pixels] = arguments;
        const digits = [], probs = [], confidences = [];
        for (let i = 0; i * pixels < images.length; i++) {
          const r = window.edgevit.classify(images.slice(i * pixels, (i + 1) * pixels));
          digits.push(r.digit);
          probs.push(r.probs);
          confidences.push(r.confidence);
        }
        return {digits, probs, confidences};
        """,
        images.reshape(-1).tolist(),
        images[0].size,
    )


def open_page(driver, url: str) -> None:
    driver.get(url)
    error = driver.execute_async_script(
        "const done = arguments[0]; window.edgevit.ready.then(() => done(null), (e) => done(String(e)))"
    )
    assert error is None, error


def next_frames(driver) -> None:
    """Wait until the page has drawn two more frames: its updates run in requestAnimationFrame."""
    driver.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done()))")


def draw(driver, strokes, kind: str) -> None:
    """Synthetic pointer strokes (pad pixels) on the pad, through the browser's real input pipeline."""
    driver.find_element(By.ID, "clear").click()
    left, top, width = pad_box(driver)
    to_viewport = lambda x, y: (round(left + x * width / PAD), round(top + y * width / PAD))  # noqa: E731
    pointer = PointerInput(POINTER_KINDS[kind], kind)
    actions = ActionBuilder(driver, mouse=pointer, duration=0)
    for stroke in strokes:
        actions.pointer_action.move_to_location(*to_viewport(*stroke[0]))
        actions.pointer_action.pointer_down()
        for x, y in stroke[1:]:
            actions.pointer_action.move_to_location(*to_viewport(x, y))
        actions.pointer_action.pointer_up()
    actions.perform()
    next_frames(driver)
    # the ink covers the strokes and nothing else: a pad that moved while drawing, or a pointer
    # mapped to the wrong pixel, puts it elsewhere
    ys, xs = np.nonzero(np.asarray(Image.open(io.BytesIO(pad_png(driver))))[..., 3])
    points = np.array([p for stroke in strokes for p in stroke])
    expected = [*(points.min(0) - PEN_WIDTH / 2), *(points.max(0) + PEN_WIDTH / 2)]
    assert np.abs(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) - expected).max() <= INK_SLACK


def pad_box(driver) -> list[float]:
    """Left, top and width of the pad's bitmap in the viewport (inside its border)."""
    return driver.execute_script(
        "const pad = document.getElementById('pad'), b = pad.getBoundingClientRect();"
        "return [b.left + pad.clientLeft, b.top + pad.clientTop, pad.clientWidth]"
    )


def pad_png(driver) -> bytes:
    url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def last_input(driver) -> np.ndarray:
    values = driver.execute_script("return window.edgevit.lastInput()")
    assert values is not None, "the page has no input: was a digit drawn?"
    return np.array(values, np.float32).reshape(28, 28)


def patch_table(driver) -> dict[str, dict[str, float]]:
    """The inspector's table: column title -> token name -> the full-precision value behind the text."""
    titles = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#patch-table-head th")][1:]
    table: dict[str, dict[str, float]] = {title: {} for title in titles}
    for row in driver.find_elements(By.CSS_SELECTOR, "#patch-table-body tr"):
        token = row.get_attribute("data-token")
        for title, cell in zip(titles, row.find_elements(By.TAG_NAME, "td"), strict=True):
            value = float(cell.get_attribute("data-value"))
            assert cell.text == f"{value:.3f}"
            table[title][token] = value
    return table


def token_names(grid: int = 4) -> list[str]:
    return ["class token"] + [f"r{p // grid}c{p % grid}" for p in range(grid * grid)]


# --- the model in the page -----------------------------------------------------------------------
def test_classify_matches_python_runtime(page_results, classifier, digits, measured):
    """MNIST test digits and damaged ones: the page gives the Python runtime's answers and numbers."""
    said, probs, attention = page_results
    expected = classifier.predict(digits)
    prob_diff = float(np.abs(probs - expected.probs).max())
    attention_diff = float(np.abs(attention - expected.attention.transpose(1, 0, 2, 3, 4)).max())
    measured["digit_images"] = len(digits)
    measured["max_prob_diff_vs_tinygrad"] = prob_diff
    measured["max_attention_diff_vs_tinygrad"] = attention_diff
    assert (said == answers(expected.probs, reject_rule(WEIGHTS))).all()
    assert prob_diff <= PROB_TOLERANCE
    assert attention_diff <= ATTENTION_TOLERANCE


def test_not_a_digit_is_answered_as_in_python(driver, url, classifier, measured):
    """Held-out non-digits: the page says "not a digit" exactly where edgevit-classify does, with the same confidence."""
    from edgevit.answer import answer

    images = load_negatives().images[:NEGATIVE_IMAGES]
    open_page(driver, url)
    out = classify_each(driver, images)
    rule, probs = reject_rule(WEIGHTS), classifier.predict(images).probs
    expected = [answer(p, rule) for p in probs]
    digits = as_answers(out["digits"])
    measured["negatives_rejected_in_page"] = float((digits == NOT_A_DIGIT).mean())
    np.testing.assert_array_equal(digits, answers(probs, rule))
    np.testing.assert_allclose(out["confidences"], [a.confidence for a in expected], atol=PROB_TOLERANCE)
    assert rule.active and (digits == NOT_A_DIGIT).mean() > 0.5  # the shipped model rejects most of them


def test_wasm_matches_native_build_of_the_same_c(page_results, digits, tmp_path, measured):
    from edgevit.export import export

    exported = export(WEIGHTS, tmp_path)
    library = tmp_path / "libedgevit.so"
    subprocess.run(
        ["cc", "-std=c99", "-O2", "-fPIC", "-shared", "-o", library, exported.files["edgevit_model.c"], "-lm"], check=True
    )
    lib = ctypes.CDLL(str(library))
    _, probs_page, attention_page = page_results
    probs = np.zeros_like(probs_page)
    attention = np.zeros_like(attention_page)
    as_floats = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))  # noqa: E731
    lib.edgevit_classify_many(as_floats(np.ascontiguousarray(digits)), len(digits), as_floats(probs), as_floats(attention))
    measured["max_prob_diff_vs_native_c"] = float(np.abs(probs_page - probs).max())
    measured["max_attention_diff_vs_native_c"] = float(np.abs(attention_page - attention).max())
    assert measured["max_prob_diff_vs_native_c"] <= NATIVE_TOLERANCE
    assert measured["max_attention_diff_vs_native_c"] <= NATIVE_TOLERANCE


def test_median_latency_per_prediction(driver, url, digits, measured):
    open_page(driver, url)
    times = driver.execute_script(
        """
        const [pixels, warmUp, calls] = arguments;
        for (let i = 0; i < warmUp; i++) window.edgevit.classify(pixels);
        const wasm = [], call = [];
        for (let i = 0; i < calls; i++) {
          const start = performance.now();
          const r = window.edgevit.classify(pixels);
          call.push(performance.now() - start);
          wasm.push(r.ms);
        }
        return {wasm, call, isolated: self.crossOriginIsolated};
        """,
        digits[0].reshape(-1).tolist(),
        WARM_UP_CALLS,
        LATENCY_CALLS,
    )
    measured["browser"] = driver.capabilities.get("browserVersion")
    measured["median_ms_wasm_call"] = float(np.median(times["wasm"]))
    measured["median_ms_classify_with_nested_arrays"] = float(np.median(times["call"]))
    measured["timer_precise"] = times["isolated"]  # cross-origin isolated: 5 us timers, not 100 us
    assert times["isolated"]
    assert measured["median_ms_wasm_call"] < LATENCY_LIMIT_MS


# --- drawing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("intended", list(DRAWINGS))
def test_drawn_digit_matches_python_preprocessing_and_prediction(driver, url, classifier, measured, intended):
    from edgevit.preprocess import preprocess

    open_page(driver, url)
    kind, strokes = DRAWINGS[intended]
    draw(driver, strokes, kind)
    page_input = last_input(driver)
    python_input = preprocess(pad_png(driver), "pad.png")
    diff = np.abs(page_input - python_input)
    said = answers(classifier.predict(python_input[None]).probs, reject_rule(WEIGHTS))[0]
    python_digit = "not a digit" if said == NOT_A_DIGIT else str(said)
    measured[f"drawn_{intended}_{kind}"] = {
        "python_digit": python_digit,
        "page_digit": driver.find_element(By.ID, "prediction").text,
        "preprocess_max_diff": float(diff.max()),
        "preprocess_mean_diff": float(diff.mean()),
    }
    assert diff.max() <= PREPROCESS_MAX_DIFF
    assert diff.mean() <= PREPROCESS_MEAN_DIFF
    assert driver.find_element(By.ID, "prediction").text == python_digit


SAMPLES = sorted((ROOT / "samples").glob("*.*"))
NOISY = ["salt-pepper", "noise"]  # damaged captures whose preprocessing median-filters them first


def noisy_capture(kind: str) -> bytes:
    from edgevit.data import load_dataset
    from edgevit.degrade import Damage, capture
    from edgevit.degrade import kind as named

    digit = load_dataset().test.images[7]
    # seed 4 draws shot noise: the held-out sensor noise is otherwise a smooth grain that is not median-filtered
    return capture(digit, [Damage(named(kind), 0.6)], "held-out", np.random.default_rng(4), "paper")


@pytest.mark.parametrize("sample", SAMPLES + NOISY, ids=[p.name if isinstance(p, Path) else p for p in SAMPLES + NOISY])
def test_preprocess_js_matches_python_on_sample_images(driver, url, measured, sample):
    """Beyond the pad: scans, photos and prints (opaque, so ink comes from contrast, not opacity), and
    noisy captures (median-filtered before the ink is found)."""
    from edgevit.preprocess import decode, noisy, preprocess

    data = sample.read_bytes() if isinstance(sample, Path) else noisy_capture(sample)
    open_page(driver, url)
    image = decode(data)
    if not isinstance(sample, Path):
        assert noisy(np.asarray(image, np.float32) / 255)
    rgba = np.asarray(image.convert("RGBA"), np.uint8)
    page = driver.execute_async_script(
        """
        const [b64, width, height, done] = arguments;
        const rgba = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        import("./preprocess.js").then((m) => done(Array.from(m.preprocess(rgba, width, height))), (e) => done(String(e)));
        """,
        base64.b64encode(rgba.tobytes()).decode(),
        image.width,
        image.height,
    )
    assert isinstance(page, list), page
    diff = np.abs(np.array(page, np.float32).reshape(28, 28) - preprocess(data))
    measured[f"sample_{getattr(sample, 'name', sample)}"] = {
        "preprocess_max_diff": float(diff.max()),
        "preprocess_mean_diff": float(diff.mean()),
    }
    assert diff.max() <= PREPROCESS_MAX_DIFF
    assert diff.mean() <= PREPROCESS_MEAN_DIFF


def test_clear_empties_the_prediction(driver, url):
    open_page(driver, url)
    draw(driver, DRAWINGS["1"][1], "mouse")
    driver.find_element(By.ID, "clear").click()
    next_frames(driver)
    assert driver.find_element(By.ID, "prediction").text == "\u2013"
    assert driver.execute_script("return window.edgevit.lastInput()") is None


# --- the patch inspector ---------------------------------------------------------------------------
def test_patch_shows_python_numbers_for_layer_and_head(driver, url, classifier):
    open_page(driver, url)
    draw(driver, DRAWINGS["7"][1], "pen")
    layer, head, patch = 1, 2, 5
    Select(driver.find_element(By.ID, "layer")).select_by_value(str(layer))
    Select(driver.find_element(By.ID, "head")).select_by_value(str(head))
    driver.find_element(By.CSS_SELECTOR, f"#patches [data-patch='{patch}']").click()

    maps = classifier.predict(last_input(driver)[None]).attention[layer, 0]  # (heads, T, T)
    table = patch_table(driver)
    names = token_names()
    for title, expected in ((f"Head {head + 1}", maps[head, patch + 1]), ("Mean over heads", maps[:, patch + 1].mean(0))):
        got = np.array([table[title][name] for name in names])
        assert np.abs(got - expected).max() <= ATTENTION_TOLERANCE, title
    # the explanation names the token this patch queried most
    top = names[int(maps[head, patch + 1].argmax())]
    assert top in driver.find_element(By.ID, "qkv").text or top == names[patch + 1]


def test_patches_work_from_the_keyboard(driver, url, classifier):
    open_page(driver, url)
    draw(driver, DRAWINGS["0"][1], "touch")
    Select(driver.find_element(By.ID, "head")).select_by_value("mean")
    first = driver.find_element(By.CSS_SELECTOR, "#patches [data-patch='0']")
    first.send_keys(Keys.ARROW_DOWN)  # r0c0 -> r1c0
    driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT, Keys.ENTER)  # -> r1c1, chosen
    chosen = driver.find_element(By.CSS_SELECTOR, "#patches [aria-pressed='true']")
    assert chosen.get_attribute("data-patch") == "5"
    layer = int(Select(driver.find_element(By.ID, "layer")).first_selected_option.get_attribute("value"))
    maps = classifier.predict(last_input(driver)[None]).attention[layer, 0]
    got = np.array([patch_table(driver)["Mean over heads"][name] for name in token_names()])
    assert np.abs(got - maps[:, 6].mean(0)).max() <= ATTENTION_TOLERANCE


def test_screenshot_after_drawing_and_choosing_a_patch(driver, url):
    open_page(driver, url)
    draw(driver, DRAWINGS["7"][1], "pen")
    driver.find_element(By.CSS_SELECTOR, "#patches [data-patch='6']").click()
    next_frames(driver)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    assert height <= WINDOW_HEIGHT, "the page no longer fits the screenshot window"
    assert driver.save_screenshot(str(SCREENSHOT))


# --- the page as a whole -------------------------------------------------------------------------
def test_no_request_leaves_the_origin(driver, url):
    driver.get_log("performance")  # drop what earlier tests logged
    open_page(driver, url)
    draw(driver, DRAWINGS["1"][1], "mouse")
    driver.find_element(By.CSS_SELECTOR, "#patches [data-patch='1']").click()
    next_frames(driver)
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    requested = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    outside = [u for u in requested if not (u.startswith(url) or u.startswith("data:"))]
    assert not outside, f"requests outside {url}: {outside}"
    site_files = ("", *site.STATIC_FILES[1:], "model.json", "edgevit.wasm")  # "": index.html
    assert {url + name for name in site_files} <= set(requested)
    types = {
        e["params"]["response"]["url"]: e["params"]["response"]["mimeType"]
        for e in events
        if e["method"] == "Network.responseReceived"
    }
    assert types[url + "edgevit.wasm"] == "application/wasm"
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_fits_a_phone_and_every_control_has_a_name(driver, url):
    # device emulation: a headless window cannot be made narrower than 500 px
    width, height = PHONE
    metrics = {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        open_page(driver, url)
        assert driver.execute_script("return window.innerWidth") == width
        draw(driver, DRAWINGS["1"][1], "touch")
        assert driver.find_element(By.ID, "prediction").text != "\u2013"
        driver.find_element(By.CSS_SELECTOR, "#patches [data-patch='5']").click()  # every panel shown
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow} px wider than a phone"
        unnamed = driver.execute_script(
            """
            return [...document.querySelectorAll('button, select, canvas#pad')]
              .filter((e) => !(e.getAttribute('aria-label') || e.textContent.trim() || e.closest('label')))
              .map((e) => e.outerHTML);
            """
        )
        assert not unnamed
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
