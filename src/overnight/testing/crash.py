"""Test-only: make a worker die on a chosen request.

With `OVERNIGHT_TEST_CRASH_ON=<marker>` in its environment, a worker
process kills itself (SIGKILL: no clean-up, as the OOM killer would) the
moment it is about to send a request whose body contains the marker. The
test suite sets it to check that such a request is given up after
`max_chunk_attempts` deaths (tests/acceptance/test_poisoned_chunks.py).
Nothing else reads it; unset, it costs the executor one comparison with
None per request.
"""

from __future__ import annotations

import os
import signal

from overnight import _json

CRASH_ENV = "OVERNIGHT_TEST_CRASH_ON"
#: The marker, read once at import; None (the normal case) disables the hook.
CRASH_MARKER: bytes | None = os.environ.get(CRASH_ENV, "").encode() or None


def crash_if_marked(body: object) -> None:
    """Die at once if the request body contains the marker."""
    if CRASH_MARKER is None:
        return
    data = body if isinstance(body, bytes) else _json.dumps(body)
    if CRASH_MARKER in data:
        os.kill(os.getpid(), signal.SIGKILL)
