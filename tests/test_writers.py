"""Digits from other writers and sources (edgevit.writers): real images, readable by the shipped model."""

import io

import numpy as np
from PIL import Image

from edgevit.preprocess import preprocess
from edgevit.writers import GROUPS, SKELETONS, generate


def test_every_group_makes_decodable_labelled_images(mnist):
    for group in GROUPS:
        made = list(generate(group, 20, 1, mnist.test))
        assert len(made) == 20
        for label, data in made:
            assert 0 <= label <= 9
            Image.open(io.BytesIO(data)).load()
        assert list(generate(group, 20, 1, mnist.test)) == made  # a pure function of its arguments


def test_every_digit_has_several_ways_of_being_written():
    assert sorted(SKELETONS) == list(range(10)) and all(len(styles) >= 2 for styles in SKELETONS.values())


def test_the_shipped_model_reads_most_of_them(mnist, shipped):
    for group in GROUPS:
        made = list(generate(group, 30, 2, mnist.test))
        images = np.stack([preprocess(data) for _, data in made])
        labels = np.array([label for label, _ in made])
        accuracy = (shipped.predict(images).probs[:, :10].argmax(1) == labels).mean()
        assert accuracy >= 0.6, (group, accuracy)
