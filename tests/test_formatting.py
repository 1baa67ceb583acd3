"""The product's number format (syngeo/formatting.py): written-out expectations, and a
property check that what is shown reads back to the value within its last digit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from syngeo.formatting import format_interval, format_number, format_pm, plural


@pytest.mark.parametrize(("value", "text"), [
    (0.014, "0.0140"), (0.01401, "0.0140"), (2.5, "2.50"), (770, "770"), (0.1, "0.100"),
    (12345.6, "12,346"), (999.7, "1,000"), (-0.5, "-0.500"), (1.2e-5, "1.20e-5"),
    (0.000861, "0.000861"), (-3.4e-7, "-3.40e-7"), (0, "0"), (None, "–"),
    (float("nan"), "–"), (float("inf"), "–"),
])
def test_numbers_have_three_significant_digits(value, text) -> None:
    assert format_number(value) == text


def test_integer_digits_are_kept_at_any_precision() -> None:
    assert format_number(208.97, 2) == "209"  # never "2.1e+02"
    assert format_number(0.0056, 2) == "0.0056"


@pytest.mark.parametrize(("estimate", "interval", "text"), [
    # The issue's own example, and the mixed-format panel a user reported.
    (0.014, (0.0056, 0.0258), "0.0140 [0.0056, 0.0258]"),
    (8.61e-4, (-8.86e-4, 0.00435), "0.00086 [-0.00089, 0.00435]"),
    (-6590.4, (-6600.2, -6580.0), "-6,590 [-6,600, -6,580]"),
    (2e-6, (1e-6, 3e-6), "2.00e-6 [1.00e-6, 3.00e-6]"),
    (None, (0.0174, 0.0323), "[0.0174, 0.0323]"),
    (0.25, None, "0.250"),
    (-0.0001, (-0.02, 0.5), "0.000 [-0.020, 0.500]"),  # no '-0.000'
])
def test_an_interval_shares_its_decimals(estimate, interval, text) -> None:
    assert format_interval(estimate, interval) == text


def test_mean_and_spread_share_their_decimals() -> None:
    assert format_pm(4.59e-4, 0.142) == "0.000 ± 0.142"
    assert format_pm(0.214, 0.031) == "0.214 ± 0.031"
    assert format_pm(1.5, None) == "1.50"


def test_shown_numbers_read_back_within_their_last_digit() -> None:
    rng = np.random.default_rng(0)
    values = rng.choice([-1, 1], 2000) * 10 ** rng.uniform(-8, 8, 2000)
    for v in values:
        text = format_number(float(v))
        shown = float(text.replace(",", ""))
        if abs(v) >= 1000:  # whole units
            assert abs(shown - v) <= 0.5 + 1e-9 * abs(v), (v, text)
        else:  # three significant digits: within half a unit of the third
            unit = 10 ** (math.floor(math.log10(abs(v))) - 2)
            assert abs(shown - v) <= 0.5 * unit * (1 + 1e-9) + 1e-300, (v, text)


def test_plural() -> None:
    assert plural(1, "seed") == "1 seed"
    assert plural(2, "seed") == "2 seeds"
    assert plural(1200, "weight") == "1,200 weights"
