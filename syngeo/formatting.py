"""The product's one number format, for sentences, tables, the CLI and figure labels.

frontend/static/js/api.js (fmtNum, fmtInterval, fmtCI, fmtPM) writes the same strings in the
browser; tests/browser/test_number_format.py checks that both agree on the same values.

* A number: ``digits`` (3) significant digits with trailing zeros kept — '0.0140', '2.50',
  '770' — large numbers in whole units with thousands separators ('12,346'), tiny ones with
  an exponent ('1.20e-5'), '–' when there is none.
* An estimate with its interval, or a mean ± s.d.: all numbers with the same decimals, enough
  for ``digits`` significant digits of the largest — '0.0140 [0.0056, 0.0258]',
  '0.000 ± 0.142' — so the eye compares digits in the same places.

Ties round away from zero on the number's exact binary value, as JavaScript's toPrecision
and toLocaleString do, so both sides agree digit for digit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

MISSING = "–"
#: Below this magnitude, leading zeros are too many to read: an exponent instead.
TINY = 1e-4


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _rounded(value: float, decimals: int) -> Decimal:
    """``value`` rounded to ``decimals`` places (negative: tens, hundreds…), ties away from
    zero."""
    return Decimal(value).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _fixed(value: float, decimals: int) -> str:
    text = f"{_rounded(value, max(decimals, 0)):,.{max(decimals, 0)}f}"
    return text[1:] if re.fullmatch(r"-[0.,]*", text) else text  # no '-0.000'


def format_number(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits: '0.0140', '2.50', '770', '12,346', '1.20e-5', '–'."""
    if not _finite(value):
        return MISSING
    if value == 0:
        return "0"
    exponent = Decimal(value).adjusted()
    rounded = _rounded(value, digits - 1 - exponent)
    exponent = rounded.adjusted()  # 999.7 → 1.00e3
    if abs(value) < TINY:  # too many leading zeros to read: an exponent
        mantissa = rounded.scaleb(-exponent).quantize(Decimal(1).scaleb(1 - digits))
        return f"{mantissa}e{exponent}"
    if exponent >= digits:  # large numbers keep their integer digits
        return _fixed(value, 0)
    return _fixed(value, digits - 1 - exponent)


def _shared(values: Sequence[float | None], digits: int) -> list[str]:
    """Format ``values`` with one number of decimals: ``digits`` significant digits of the
    largest magnitude among them."""
    finite = [abs(v) for v in values if _finite(v)]
    largest = max(finite, default=0.0)
    if largest == 0:
        return [MISSING if not _finite(v) else "0" for v in values]
    if largest < TINY:
        return [format_number(v, digits) for v in values]
    decimals = max(0, digits - 1 - math.floor(math.log10(largest)))
    return [_fixed(v, decimals) if _finite(v) else MISSING for v in values]


def format_interval(estimate: float | None, interval: Sequence[float | None] | None,
                    digits: int = 3) -> str:
    """'0.0140 [0.0056, 0.0258]'; the estimate alone when there is no interval; the interval
    alone ('[0.0056, 0.0258]') when ``estimate`` is None."""
    if interval is None or len(interval) != 2:
        return format_number(estimate, digits)
    if estimate is None:
        lo, hi = _shared(list(interval), digits)
        return f"[{lo}, {hi}]"
    est, lo, hi = _shared([estimate, *interval], digits)
    return f"{est} [{lo}, {hi}]"


def format_pm(mean: float | None, spread: float | None, digits: int = 3) -> str:
    """'0.214 ± 0.031': a mean and its standard deviation (or error) with shared decimals."""
    if not _finite(spread):
        return format_number(mean, digits)
    m, s = _shared([mean, spread], digits)
    return f"{m} ± {s}"


def format_seconds(seconds: float, about: bool = True) -> str:
    """'about 40 s', 'about 12 min', 'about 3.5 h' (two significant digits at most)."""
    prefix = "about " if about else ""
    if seconds < 1:
        return "under a second" if about else f"{seconds:g} s"
    unit, size = next((u, s) for u, s in (("h", 3600.0), ("min", 60.0), ("s", 1.0))
                      if seconds >= s)
    value = seconds / size
    return f"{prefix}{value:.2g} {unit}" if value < 10 else f"{prefix}{value:,.0f} {unit}"


def format_bytes(count: float) -> str:
    """Decimal units, two significant digits: '350 MB', '1.2 GB', '40 GB'."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.2g} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    return f"{count:.0f} bytes"


def and_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 seed', '2 seeds', '1,000 weights' ('1 network × …' reads right)."""
    word = noun if count == 1 else (plural_form or f"{noun}s")
    return f"{count:,} {word}"
