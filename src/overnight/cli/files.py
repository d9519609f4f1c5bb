"""`overnight files upload|list|get|download|delete`, against any overnight
server over HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from overnight.cli.common import (
    EXIT_INTERRUPTED,
    JsonOption,
    columns,
    console,
    fail,
    note,
    print_json,
    readable_file,
    when,
)
from overnight.cli.connection import DEFAULT_BASE_URL, ApiKeyOption, BaseUrlOption, connected
from overnight.cli.downloads import download_to
from overnight.cli.progress import BytesProgress
from overnight.cli.remote import DEFAULT_PART_SIZE, Remote, iter_pages

files_app = typer.Typer(
    rich_markup_mode="markdown", help="Files on an overnight server: batch inputs and results."
)

FileIdArgument = Annotated[str, typer.Argument(help="The file's id (file-...).")]


@files_app.command("upload")
def files_upload(
    path: Annotated[Path, typer.Argument(help="The file to upload.")],
    purpose: Annotated[str, typer.Option(help="What the file is for.")] = "batch",
    part_size: Annotated[
        int,
        typer.Option(
            min=1, help="Files larger than this go through the Uploads API, in parts this size."
        ),
    ] = DEFAULT_PART_SIZE,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload a file, with a bytes progress bar; large files go in parts."""
    readable_file(path)
    with connected(base_url, api_key) as remote:
        file = upload_with_progress(remote, path, purpose, part_size, quiet=json_output)
    if json_output:
        print_json(file)
    else:
        show_file(file)


def upload_with_progress(
    remote: Remote, path: Path, purpose: str, part_size: int, *, quiet: bool
) -> dict[str, Any]:
    """Ctrl-C stops the upload (one in parts is cancelled on the server) and
    ends the command with a line that says so, rather than in silence."""
    size = path.stat().st_size
    try:
        with BytesProgress(console, f"uploading {path.name}", size, enabled=not quiet) as bar:
            return remote.upload_file(
                path, purpose=purpose, part_size=part_size, progress=bar.advance
            )
    except KeyboardInterrupt:
        if not quiet:
            note(f"interrupted: {path.name} was not uploaded, nor a batch made of it")
        raise typer.Exit(EXIT_INTERRUPTED) from None


@files_app.command("list")
def files_list(
    purpose: Annotated[
        str | None, typer.Option(help="Only files with this purpose.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List files, newest first."""
    with connected(base_url, api_key) as remote:
        files = list(
            iter_pages(
                lambda after: remote.list_files(
                    purpose=purpose, limit=min(limit, 100), after=after
                ),
                limit,
            )
        )
    if json_output:
        print_json({"object": "list", "data": files})
        return
    rows = [("ID", "BYTES", "CREATED", "PURPOSE", "FILENAME")]
    rows += [
        (f["id"], f"{f['bytes']:,}", when(f.get("created_at")), f["purpose"], f["filename"])
        for f in files
    ]
    columns(rows)


@files_app.command("get")
def files_get(
    file_id: FileIdArgument,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one file."""
    with connected(base_url, api_key) as remote:
        file = remote.get_file(file_id)
    if json_output:
        print_json(file)
    else:
        show_file(file)


@files_app.command("download")
def files_download(
    file_id: FileIdArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write here; into a folder, under the file's name (default: stdout).",
            show_default=False,
        ),
    ] = None,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Download a file's bytes, to a path (with a progress bar) or stdout."""
    if output is None and json_output:
        fail("--json needs --output: stdout is for the JSON")
    with connected(base_url, api_key) as remote:
        if output is None:
            remote.download(file_id, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        file = remote.get_file(file_id)
        if output.is_dir():
            output = output / Path(str(file.get("filename") or f"{file_id}.jsonl")).name
        written = download_to(remote, file, output, quiet=json_output)
    if json_output:
        print_json({"id": file_id, "path": str(output), "bytes": written})
    else:
        note(f"wrote {written:,} bytes to {output}")


@files_app.command("delete")
def files_delete(
    file_id: FileIdArgument,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a file."""
    with connected(base_url, api_key) as remote:
        deleted = remote.delete_file(file_id)
    if json_output:
        print_json(deleted)
    else:
        typer.echo(f"deleted {deleted['id']}")


def show_file(file: dict[str, Any]) -> None:
    columns(
        [
            ("id", file["id"]),
            ("filename", file["filename"]),
            ("bytes", f"{file['bytes']:,}"),
            ("purpose", file["purpose"]),
            ("created", when(file.get("created_at"))),
            ("expires", when(file.get("expires_at"))),
        ]
    )
