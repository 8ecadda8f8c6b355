"""explain.explain: the class token's grid and the strongest links, on attention built to a known answer."""

import numpy as np
import pytest

from edgevit.explain import explain, patch_name, strongest_links

GRID = 4
TOKENS = GRID * GRID + 1
DEPTH, HEADS = 2, 4


def uniform() -> np.ndarray:
    return np.full((DEPTH, HEADS, TOKENS, TOKENS), 1.0 / TOKENS)


def test_patch_names_count_rows_and_columns_from_zero():
    assert [patch_name(p, GRID) for p in (0, 1, 4, 6, 15)] == ["r0c0", "r0c1", "r1c0", "r1c2", "r3c3"]


def test_class_token_row_is_printed_as_a_grid_in_its_place():
    maps = uniform()
    maps[0, :, 0, :] = 0.0
    maps[0, :, 0, 1 + 6] = 1.0  # every head of layer 1: the class token looks only at r1c2
    lines = explain(maps, GRID).splitlines()
    start = lines.index("Layer 1 of 2")
    grid_rows = lines[start + 3 : start + 3 + GRID]
    assert grid_rows[1].split() == ["r1", "0.000", "0.000", "1.000", "0.000"]
    assert grid_rows[0].split() == ["r0", "0.000", "0.000", "0.000", "0.000"]
    assert "(to itself: 0.000)" in lines[start + 3 + GRID]


def test_links_are_head_means_and_leave_out_self_attention():
    maps = uniform()
    # patch r0c0 (token 1) attends to itself most, then to r3c3 (token 16) in half the heads
    maps[1, :, 1, :] = 0.0
    maps[1, :, 1, 1] = 1.0
    maps[1, :2, 1, 1] = 0.2
    maps[1, :2, 1, 16] = 0.8
    links = strongest_links(maps[1].mean(0), GRID, k=1)
    assert links == [("r0c0", "r3c3", pytest.approx(0.4))]
    assert "r0c0 -> r3c3  0.400" in explain(maps, GRID)


def test_wrong_shape_is_refused_with_the_expected_one():
    with pytest.raises(ValueError, match=r"\(depth, heads, 17, 17\)"):
        explain(np.zeros((4, 4, 16, 16)), GRID)
