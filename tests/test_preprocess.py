import io

import numpy as np
import pytest
from PIL import Image

from edgevit.errors import EdgeViTError
from edgevit.preprocess import BOX, CANVAS, decode, preprocess, stroke_width

EXIF_ORIENTATION = 0x0112


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def forms(digit: np.ndarray) -> dict[str, bytes]:
    """One MNIST digit (white on black, 28x28) in the forms real inputs come in."""
    big = Image.fromarray(digit).resize((168, 168), Image.Resampling.BICUBIC)
    dark_on_light = Image.fromarray(255 - np.asarray(big))
    rgba = np.zeros((168, 168, 4), np.uint8)
    rgba[..., 3] = np.asarray(big)  # black strokes on a transparent canvas
    frame = Image.new("L", (900, 600), 255)
    frame.paste(dark_on_light.resize((90, 90)), (700, 60))  # small and far off-centre
    coloured = Image.merge(
        "RGB",
        [
            dark_on_light.point(lambda v: 60 + v * 0.7),
            dark_on_light.point(lambda v: 40 + v * 0.8),
            dark_on_light.point(lambda v: 160 + v * 0.35),
        ],
    )
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored turned; a viewer rotates 90 degrees clockwise to show it upright
    return {
        "inverted": encode(Image.fromarray(255 - digit)),
        "transparent": encode(Image.fromarray(rgba, "RGBA")),
        "off-centre": encode(frame),
        "tiny": encode(Image.fromarray(digit).resize((14, 14), Image.Resampling.BOX)),
        "huge": encode(dark_on_light.resize((1400, 1400), Image.Resampling.BICUBIC)),
        "palette": encode(dark_on_light.convert("RGB").quantize(16)),
        "16-bit": encode(Image.fromarray(np.asarray(big).astype(np.uint16) * 257)),
        "jpeg": encode(coloured, "JPEG", quality=35),
        "exif-rotated": encode(dark_on_light.rotate(90, expand=True), "JPEG", quality=90, exif=exif),
    }


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : x.shape[0], 0 : x.shape[1]]
    return float((ys * x).sum() / x.sum()), float((xs * x).sum() / x.sum())


@pytest.mark.parametrize(
    "form", ["inverted", "transparent", "off-centre", "tiny", "huge", "palette", "16-bit", "jpeg", "exif-rotated"]
)
def test_every_form_lands_centred_like_mnist(mnist, form):
    for digit in mnist.test.images[:5]:
        out = preprocess(forms(digit)[form], form)
        assert out.shape == (CANVAS, CANVAS) and out.dtype == np.float32
        assert out.max() > 200 and out.min() >= 0
        cy, cx = centre_of_mass(out)
        assert abs(cy - 13.5) < 0.6 and abs(cx - 13.5) < 0.6, (form, cy, cx)
        rows, cols = np.nonzero(out > 30)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 in range(BOX - 2, BOX + 3)  # the 20x20 box, keeping aspect
        assert out[[0, -1]].max() < 30 and out[:, [0, -1]].max() < 30  # black surround


def test_exif_orientation_is_applied():
    img = Image.new("L", (60, 30), 255)
    img.paste(0, (0, 0, 10, 30))  # a bar at the left of the stored pixels
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    upright = decode(encode(img, "JPEG", exif=exif))
    assert upright.size == (30, 60)
    assert np.asarray(upright)[:10].mean() < 100  # after the clockwise turn, the bar is at the top


def test_mnist_digits_pass_through_nearly_unchanged(mnist):
    for digit in mnist.test.images[:20]:
        out = preprocess(encode(Image.fromarray(digit)))
        assert np.corrcoef(out.ravel(), digit.ravel())[0, 1] > 0.55
        assert np.abs(np.array(centre_of_mass(out)) - centre_of_mass(digit.astype(np.float32))).max() < 1.0


def test_hairline_and_heavy_strokes_are_brought_to_mnist_width():
    from edgevit.preprocess import MNIST_STROKE, normalize_strokes

    for width in (1, 24):
        img = np.zeros((200, 120), np.float32)
        img[10:190, 60 - width // 2 : 60 - width // 2 + width] = 1  # a "1" drawn with that pen
        img[10 : 10 + width, 20:100] = 1
        out = normalize_strokes(img)
        assert abs(stroke_width(out > 0.5) - MNIST_STROKE) < 2.5, width


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"hello, not an image", "not an image"),
        (encode(Image.new("L", (64, 64), 255))[:60], "damaged image"),
        (encode(Image.new("L", (64, 64), 255)), "no digit found"),
        (encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), "no digit found"),
        (encode(Image.effect_noise((64, 64), 2).point(lambda v: 128 + (v - 128) // 20)), "no digit found"),
    ],
)
def test_bad_images_are_errors_not_guesses(data, message):
    with pytest.raises(EdgeViTError, match=message) as e:
        preprocess(data, "input.png")
    assert str(e.value).startswith("input.png: ")


def test_real_forms_are_classified_as_the_originals(mnist, shipped):
    digits = mnist.test.images[:40]
    originals = shipped.predict(digits.astype(np.float32)).probs.argmax(-1)
    by_form: dict[str, list[np.ndarray]] = {}
    for digit in digits:
        for form, data in forms(digit).items():
            by_form.setdefault(form, []).append(preprocess(data, form))
    for form, images in by_form.items():
        agreement = (shipped.predict(np.stack(images)).probs.argmax(-1) == originals).mean()
        assert agreement >= 0.95, (form, agreement)


def test_box_blur_matches_numpy_convolution():
    from edgevit.preprocess import _box_blur

    a = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    k = np.ones(7) / 7
    ref = np.apply_along_axis(np.convolve, 0, np.pad(a, 3, mode="edge"), k, mode="valid")
    ref = np.apply_along_axis(np.convolve, 1, ref, k, mode="valid")
    np.testing.assert_allclose(_box_blur(a, 3), ref, atol=1e-6)


def test_noise_is_median_filtered_and_clean_images_are_left_exactly_alone(mnist):
    from edgevit.preprocess import denoise, noisy

    rng = np.random.default_rng(0)
    clean = mnist.test.images[:50].astype(np.float32) / 255
    assert not any(noisy(a) for a in clean)
    for a in clean:
        assert denoise(a) is a  # not a copy, not a filtered one: the same pixels
    hit = rng.random(clean[0].shape) < 0.15
    speckled = np.where(hit, (rng.random(clean[0].shape) < 0.5).astype(np.float32), clean[0])
    grainy = np.clip(clean[1] + rng.normal(0, 0.2, clean[1].shape), 0, 1).astype(np.float32)
    for noisy_image, original in ((speckled, clean[0]), (grainy, clean[1])):
        assert noisy(noisy_image)
        restored = denoise(noisy_image)
        assert np.abs(restored - original).mean() < 0.75 * np.abs(noisy_image - original).mean()


def test_a_digit_under_salt_and_pepper_preprocesses_like_the_clean_one(mnist):
    rng = np.random.default_rng(1)
    close = 0
    for digit in mnist.test.images[:20]:
        hit = rng.random(digit.shape) < 0.1
        speckled = np.where(hit, 255 * (rng.random(digit.shape) < 0.5), digit).astype(np.uint8)
        a, b = preprocess(encode(Image.fromarray(digit))), preprocess(encode(Image.fromarray(speckled)))
        close += np.abs(a - b).mean() < 25  # grey levels: the specks neither became strokes nor moved the digit
    assert close >= 17
