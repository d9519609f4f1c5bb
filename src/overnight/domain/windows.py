"""Completion windows: how long a batch may take.

Grammar: a positive whole number followed by one unit, no spaces:
`s` (seconds), `m` (minutes), `h` (hours) or `d` (days). Examples: `24h`,
`1h`, `90m`, `7d`. The accepted range is configured (`min_completion_window`
and `max_completion_window`, 1h and 7d by default); tests lower the floor to
seconds.
"""

from __future__ import annotations

import re

_WINDOW = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(text: str) -> int:
    """Seconds in a window like `24h`; ValueError when it does not parse."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(
            f"completion_window {text!r} is not a duration like '24h' "
            "(a whole number followed by s, m, h or d)."
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
