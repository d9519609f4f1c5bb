from __future__ import annotations

import pytest

from overnight.domain.windows import window_seconds


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("1h", 3600), ("7d", 604800), ("90m", 5400), ("5s", 5)]
)
def test_windows_parse(text: str, seconds: int) -> None:
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "0h", "-1h", "1.5h", "24 h", "1w", "24H", "01h"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="completion_window"):
        window_seconds(text)
