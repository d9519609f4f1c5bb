"""Files from a server onto the local disk, whole or not at all: bytes go to
a temporary file beside the target, which is renamed over it only when the
last byte is in, so an interrupted download never leaves half a file under
the name a script waits for."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import typer

from overnight.cli.common import EXIT_INTERRUPTED, as_new_file, console, fail, note
from overnight.cli.progress import BytesProgress
from overnight.cli.remote import Progress, Remote


def download_to(remote: Remote, file: dict[str, Any], path: Path, *, quiet: bool) -> int:
    """Download one file (the API's file object) to `path`; returns bytes.
    A path the disk refuses (a folder, no permission, no space) ends the
    command with one line, not a traceback."""
    try:
        return _download_to(remote, file, path, quiet=quiet)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


def writable_folder(folder: Path) -> None:
    """Make `folder` (for result files) now, before anything is sent, so
    that a bad `--output` is told at once, not after the batch has run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot write into {folder}: {exc.strerror or exc}")


def _download_to(remote: Remote, file: dict[str, Any], path: Path, *, quiet: bool) -> int:
    return _write_whole(
        path,
        file.get("bytes"),
        quiet,
        lambda sink, advance: remote.download(file["id"], sink, advance),
    )


def _write_whole(
    path: Path, size: int | None, quiet: bool, fill: Callable[[IO[bytes], Progress], int]
) -> int:
    """Write what `fill` streams into a temporary file, renamed to `path`
    once the last byte is in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    as_new_file(temporary)
    try:
        label = f"downloading {path.name}"
        with (
            os.fdopen(handle, "wb") as sink,
            BytesProgress(console, label, size, enabled=not quiet) as bar,
        ):
            written = fill(sink, bar.advance)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return written


def download_lines(
    remote: Remote, batch: dict[str, Any], folder: Path, *, merged: bool, quiet: bool
) -> dict[str, str | None]:
    """A batch's result lines so far (`merged`: merged with the batches it
    retries) into `folder`, as `<id>_output.partial.jsonl` and
    `<id>_errors.partial.jsonl` (`.merged.jsonl`); which paths were written."""
    suffix = "merged" if merged else "partial"
    written: dict[str, str | None] = {"output": None, "errors": None}
    for kind in written:
        path = folder / f"{batch['id']}_{kind}.{suffix}.jsonl"
        try:
            _write_whole(path, None, quiet, _lines_of(remote, batch["id"], kind, merged))
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")
        written[kind] = str(path)
    return written


def download_results(
    remote: Remote, batch: dict[str, Any], folder: Path, *, quiet: bool
) -> dict[str, str | None]:
    """A batch's output and error files into `folder`, under the names the
    server gave them; which paths were written (None: the batch has no such
    file, e.g. nothing failed)."""
    written: dict[str, str | None] = {"output": None, "errors": None}
    try:
        for kind, key in (("output", "output_file_id"), ("errors", "error_file_id")):
            file_id = batch.get(key)
            if not file_id:
                continue
            file = remote.get_file(file_id)
            name = Path(str(file.get("filename") or f"{file_id}.jsonl")).name
            path = folder / name
            download_to(remote, file, path, quiet=quiet)
            written[kind] = str(path)
    except KeyboardInterrupt:  # the results stay on the server: say how to fetch them
        if not quiet:
            note(
                f"interrupted; the results stay on the server: "
                f"overnight batches download {batch['id']} -o {folder}"
            )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    return written


def _lines_of(
    remote: Remote, batch_id: str, kind: str, merged: bool
) -> Callable[[IO[bytes], Progress], int]:
    def fill(sink: IO[bytes], advance: Progress) -> int:
        return remote.stream_results(batch_id, kind, sink, merged=merged, progress=advance)

    return fill
