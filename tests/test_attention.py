import numpy as np

from edgevit.attention import cls_attention, render, rollout


def random_maps(rng, depth=3, heads=2, tokens=17):
    logits = rng.standard_normal((depth, heads, tokens, tokens))
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def test_cls_attention_is_the_head_mean_of_the_class_row():
    maps = random_maps(np.random.default_rng(0))
    per_layer = cls_attention(maps, 4)
    assert per_layer.shape == (3, 4, 4)
    np.testing.assert_allclose(per_layer[1, 0, 2], maps[1, :, 0, 3].mean())


def test_rollout_matches_the_definition_and_identity_attention_stays_home():
    maps = random_maps(np.random.default_rng(1))
    flow = np.eye(17)
    for layer in maps.mean(1):
        a = 0.5 * layer + 0.5 * np.eye(17)
        flow = (a / a.sum(-1, keepdims=True)) @ flow
    np.testing.assert_allclose(rollout(maps, 4), flow[0, 1:].reshape(4, 4))
    stay = np.broadcast_to(np.eye(17), (3, 2, 17, 17))
    assert np.allclose(rollout(stay, 4), 0)  # the class token only ever looked at itself


def test_render_has_a_panel_per_layer_plus_input_and_rollout():
    image = np.zeros((28, 28), np.float32)
    image[4:24, 12:16] = 255
    picture = render(image, random_maps(np.random.default_rng(2)), "digit 1 (97.0%)")
    px = np.asarray(picture)
    assert picture.mode == "RGB" and picture.width > 5 * 224 and picture.height > 224
    panels = [px[60:250, 12 + i * 236 + 100] for i in range(5)]  # a column through each panel
    assert all(p.std() > 5 for p in panels)
