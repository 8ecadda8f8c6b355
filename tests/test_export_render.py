import numpy as np
import pytest

from edgevit.export.render import c_literal, fill


def test_float_literals_round_trip_exactly():
    values = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    values = np.concatenate([values, np.float32([0, -0.0, 3, 1e-38, 3e38])])
    literals = c_literal(np.dtype(np.float32), values)
    assert all(s.endswith("f") and any(c in s for c in ".e") for s in literals)
    np.testing.assert_array_equal(np.float32([float(s[:-1]) for s in literals]), values)
    assert c_literal(np.dtype(np.float32), np.float32([np.inf, -np.inf, np.nan])) == ["INFINITY", "-INFINITY", "NAN"]


def test_templates_are_filled_completely_or_not_at_all():
    assert fill("#define A @A@ /* @B@ */", {"A": 1, "B": "x"}) == "#define A 1 /* x */"
    with pytest.raises(KeyError, match="@MISSING@"):
        fill("@MISSING@", {})
