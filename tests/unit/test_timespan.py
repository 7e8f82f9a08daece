from __future__ import annotations

import math

import pytest

from offsite import quantities


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600), ("1h 30min", 5400), ("1h30min", 5400), ("90", 90), ("2d", 172800),
     ("500ms", 0.5), ("1w", 604800), ("infinity", math.inf), (" 10 s ", 10), ("1.5h", 5400)],
)
def test_parse(text: str, seconds: float) -> None:
    assert quantities.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "5 parsecs", "-1h", "1h x", "soon"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(quantities.TimeSpanError):
        quantities.parse(text)


@pytest.mark.parametrize("seconds", [1, 59, 60, 3600, 5400, 86400 + 61, math.inf])
def test_format_reads_back(seconds: float) -> None:
    assert quantities.parse(quantities.format_span(seconds)) == seconds
