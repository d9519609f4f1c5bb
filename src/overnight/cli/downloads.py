"""Files from a server onto the local disk, whole or not at all: bytes go to
a temporary file beside the target, which is renamed over it only when the
last byte is in, so an interrupted download never leaves half a file under
the name a script waits for."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from overnight.cli.common import console
from overnight.cli.progress import BytesProgress
from overnight.cli.remote import Remote


def download_to(remote: Remote, file: dict[str, Any], path: Path, *, quiet: bool) -> int:
    """Download one file (the API's file object) to `path`; returns bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        label = f"downloading {path.name}"
        with (
            os.fdopen(handle, "wb") as sink,
            BytesProgress(console, label, file.get("bytes"), enabled=not quiet) as bar,
        ):
            written = remote.download(file["id"], sink, bar.advance)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return written


def download_results(
    remote: Remote, batch: dict[str, Any], folder: Path, *, quiet: bool
) -> dict[str, str | None]:
    """A batch's output and error files into `folder`, under the names the
    server gave them; which paths were written (None: the batch has no such
    file, e.g. nothing failed)."""
    written: dict[str, str | None] = {"output": None, "errors": None}
    for kind, key in (("output", "output_file_id"), ("errors", "error_file_id")):
        file_id = batch.get(key)
        if not file_id:
            continue
        file = remote.get_file(file_id)
        name = Path(str(file.get("filename") or f"{file_id}.jsonl")).name
        path = folder / name
        download_to(remote, file, path, quiet=quiet)
        written[kind] = str(path)
    return written
