"""`overnight batches submit|list|get|watch|cancel|retry|download`, against any
overnight server over HTTP.

Waiting (`submit --wait`, `watch`) polls the batch and draws a live line;
Ctrl-C while waiting only detaches, because the batch lives on the server
(`--cancel-on-interrupt` cancels it instead). Exit codes say how the batch
ended: 0 completed, 1 failed, expired or cancelled, 2 the command or the
server could not be used, 130 interrupted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from overnight.cli.common import (
    EXIT_COMPLETED,
    EXIT_INTERRUPTED,
    EXIT_NOT_COMPLETED,
    EXIT_USAGE,
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
from overnight.cli.downloads import download_lines, download_results, writable_folder
from overnight.cli.files import upload_with_progress
from overnight.cli.locations import endpoint_of_file
from overnight.cli.progress import (
    BatchProgress,
    BatchView,
    average_rate,
    counts_line,
    duration,
    error_line,
    eta_from,
    per_second,
)
from overnight.cli.remote import DEFAULT_PART_SIZE, Remote, ServerDeclined, iter_pages
from overnight.domain.error_groups import group_errors

batches_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Batches on an overnight server: submit, follow, fetch results.",
)

BatchIdArgument = Annotated[str, typer.Argument(help="The batch's id (batch_...).")]
IntervalOption = Annotated[
    float, typer.Option(min=0.05, help="Seconds between looks at the batch while waiting.")
]
CancelOnInterruptOption = Annotated[
    bool,
    typer.Option(
        "--cancel-on-interrupt",
        help="Ctrl-C cancels the batch instead of detaching from it.",
    ),
]

#: Error-file lines `get` reads to group errors by code.
ERROR_LINES_READ = 1000


@batches_app.command("submit")
def batches_submit(
    path: Annotated[Path, typer.Argument(help="A JSONL file of requests.")],
    endpoint: Annotated[
        str | None,
        typer.Option(help="Default: the `url` of the file's first line.", show_default=False),
    ] = None,
    window: Annotated[str, typer.Option(help="The completion window.")] = "24h",
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", help="key=value, repeatable.", show_default=False),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it to the end, then download the results.")
    ] = False,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="With --wait: where the results go.")
    ] = Path("."),
    cancel_on_interrupt: CancelOnInterruptOption = False,
    part_size: Annotated[
        int, typer.Option(min=1, help="Files larger than this are uploaded in parts.")
    ] = DEFAULT_PART_SIZE,
    interval: IntervalOption = 0.5,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload a file and create a batch of it; with --wait, a live progress
    line, then the output and error files downloaded."""
    readable_file(path)
    pairs = _metadata(metadata or [])
    endpoint = endpoint or endpoint_of_file(path) or "/v1/chat/completions"
    if wait:
        writable_folder(output)
    with connected(base_url, api_key) as remote:
        file = upload_with_progress(remote, path, "batch", part_size, quiet=json_output)
        try:
            batch = remote.create_batch(
                file["id"], endpoint=endpoint, completion_window=window, metadata=pairs
            )
        except ServerDeclined:
            # A refused create (a bad --window or --endpoint) would leave
            # the upload behind, unused, on every try; it was made for this
            # batch alone.
            remote.delete_file(file["id"])
            raise
        if not json_output:
            note(f"created {batch['id']} from {file['id']} ({path.name})")
        if not wait:
            if json_output:
                print_json({"batch": batch, "file": file})
            else:
                typer.echo(batch["id"])
            return
        batch = _follow(
            remote,
            batch,
            interval=interval,
            quiet=json_output,
            cancel_on_interrupt=cancel_on_interrupt,
            base_url=base_url,
        )
        downloaded = download_results(remote, batch, output, quiet=json_output)
    _finish(batch, json_output, {"file": file, "downloaded": downloaded})


@batches_app.command("list")
def batches_list(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List batches, newest first."""
    with connected(base_url, api_key) as remote:
        batches = list(
            iter_pages(lambda after: remote.list_batches(limit=min(limit, 100), after=after), limit)
        )
    if json_output:
        print_json({"object": "list", "data": batches})
        return
    rows = [("ID", "STATUS", "DONE", "FAILED", "CREATED", "ENDPOINT")]
    for batch in batches:
        view = BatchView.of_api(batch)
        rows.append(
            (
                view.id,
                view.status,
                f"{view.done:,}/{view.total:,}",
                f"{view.failed:,}",
                when(batch.get("created_at")),
                str(batch.get("endpoint")),
            )
        )
    columns(rows)


@batches_app.command("get")
def batches_get(
    batch_id: BatchIdArgument,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a batch: counts, rate, ETA, and its first errors grouped by code."""
    with connected(base_url, api_key) as remote:
        batch = remote.get_batch(batch_id)
        error_lines = (
            remote.first_lines(batch["error_file_id"], ERROR_LINES_READ)
            if batch.get("error_file_id")
            else []
        )
    view = BatchView.of_api(batch)
    rate = average_rate(batch)
    eta = eta_from(view, rate)
    groups = group_errors(batch, error_lines)
    if json_output:
        print_json(
            {
                "batch": batch,
                "requests_per_second": rate,
                "eta_seconds": eta,
                "error_groups": [group.as_json() for group in groups],
            }
        )
        return
    usage = batch.get("usage") or {}
    typer.echo(f"{view.id}  {view.status}")
    columns(
        [
            ("endpoint", str(batch.get("endpoint"))),
            ("input", str(batch.get("input_file_id"))),
            ("created", when(batch.get("created_at"))),
            ("requests", counts_line(view)),
            ("rate", per_second(rate, "req")),
            ("eta", duration(eta)),
            (
                "tokens",
                f"{usage.get('input_tokens', 0):,} in, {usage.get('output_tokens', 0):,} out",
            ),
            ("output", str(batch.get("output_file_id") or "-")),
            ("errors", str(batch.get("error_file_id") or "-")),
        ]
    )
    if groups:
        typer.echo("")
        read = "" if len(error_lines) < ERROR_LINES_READ else f" (first {ERROR_LINES_READ:,})"
        typer.echo(f"errors by code{read}:")
        rows = [("CODE", "COUNT", "MESSAGE", "FOR")]
        rows += [
            (g.code, f"{g.count:,}", _short(g.message, 60), ", ".join(g.examples)) for g in groups
        ]
        columns(rows)


@batches_app.command("watch")
def batches_watch(
    batch_id: BatchIdArgument,
    interval: IntervalOption = 0.5,
    cancel_on_interrupt: CancelOnInterruptOption = False,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Follow a batch to its end with a live progress line (Ctrl-C detaches)."""
    with connected(base_url, api_key) as remote:
        batch = _follow(
            remote,
            remote.get_batch(batch_id),
            interval=interval,
            quiet=json_output,
            cancel_on_interrupt=cancel_on_interrupt,
            base_url=base_url,
        )
    _finish(batch, json_output, {})


@batches_app.command("cancel")
def batches_cancel(
    batch_id: BatchIdArgument,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Cancel a batch: nothing new starts, what runs finishes, the rest is
    written as `batch_cancelled`."""
    with connected(base_url, api_key) as remote:
        batch = remote.cancel_batch(batch_id)
    if json_output:
        print_json({"batch": batch})
    else:
        typer.echo(f"{batch['id']}: {batch['status']}")


@batches_app.command("retry")
def batches_retry(
    batch_id: BatchIdArgument,
    outcome: Annotated[
        list[str] | None,
        typer.Option(
            "--outcome",
            help="Retry the lines that ended so: `failed`, `expired` or `cancelled` "
            "(repeat it; all three when not given).",
        ),
    ] = None,
    completion_window: Annotated[
        str | None,
        typer.Option("--completion-window", help="The new batch's window (the original's)."),
    ] = None,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a new batch of an ended batch's lines that did not succeed."""
    with connected(base_url, api_key) as remote:
        batch = remote.retry_batch(batch_id, outcomes=outcome, completion_window=completion_window)
    if json_output:
        print_json({"batch": batch})
    else:
        typer.echo(f"{batch['id']}: {batch['status']} (retry of {batch_id})")


@batches_app.command("download")
def batches_download(
    batch_id: BatchIdArgument,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The folder the result files go to.")
    ] = Path("."),
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="The result lines written so far, also of a batch still running "
            "(`<id>_output.partial.jsonl`, `<id>_errors.partial.jsonl`).",
        ),
    ] = False,
    merged: Annotated[
        bool,
        typer.Option(
            "--merged",
            help="For a retry batch: its results merged with the original's, every line "
            "once (`<id>_output.merged.jsonl`, `<id>_errors.merged.jsonl`).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Download an ended batch's output and error files (or, `--partial`,
    what a running batch has written so far)."""
    if partial and merged:
        fail("choose --partial or --merged, not both", code=EXIT_USAGE)
    with connected(base_url, api_key) as remote:
        batch = remote.get_batch(batch_id)
        if partial or merged:
            writable_folder(output)
            lines = download_lines(remote, batch, output, merged=merged, quiet=json_output)
            if json_output:
                print_json({"batch": batch, "downloaded": lines})
            else:
                for path in lines.values():
                    typer.echo(path)
            raise typer.Exit(EXIT_COMPLETED)
        if not BatchView.of_api(batch).ended:
            fail(
                f"{batch_id} is still {batch['status']}; its results are not ready "
                f"(follow it with `overnight batches watch {batch_id}`)"
            )
        downloaded = download_results(remote, batch, output, quiet=json_output)
    _finish(batch, json_output, {"downloaded": downloaded})


# ------------------------------------------------------------------- helpers


def _follow(
    remote: Remote,
    batch: dict[str, Any],
    *,
    interval: float,
    quiet: bool,
    cancel_on_interrupt: bool,
    base_url: str,
) -> dict[str, Any]:
    """Look at the batch every `interval` seconds until it ends, drawing
    progress; Ctrl-C detaches (or cancels) and ends the command."""
    view = BatchView.of_api(batch)
    try:
        with BatchProgress(console, enabled=not quiet) as progress:
            progress.update(view)
            while not view.ended:
                time.sleep(interval)
                batch = remote.get_batch(view.id)
                view = BatchView.of_api(batch)
                progress.update(view)
    except KeyboardInterrupt:
        _interrupted(remote, batch, cancel_on_interrupt, quiet, base_url)
    return batch


def _interrupted(
    remote: Remote, batch: dict[str, Any], cancel: bool, quiet: bool, base_url: str
) -> NoReturn:
    batch_id = batch["id"]
    if cancel:
        batch = remote.cancel_batch(batch_id)
        if quiet:
            print_json({"batch": batch, "interrupted": "cancelled"})
        else:
            note(f"cancelling {batch_id}: requests under way finish, the rest will not run")
        raise typer.Exit(EXIT_INTERRUPTED)
    if quiet:
        print_json({"batch": batch, "interrupted": "detached"})
    else:
        where = "" if base_url == DEFAULT_BASE_URL else f" --base-url {base_url}"
        note(
            f"detached; {batch_id} goes on. Re-attach with: overnight batches watch {batch_id}{where}"
        )
    raise typer.Exit(EXIT_INTERRUPTED)


def _finish(batch: dict[str, Any], json_output: bool, extra: dict[str, Any]) -> NoReturn:
    """Report how the batch ended, and exit with the code that says so."""
    view = BatchView.of_api(batch)
    if json_output:
        print_json({"batch": batch, **extra})
    else:
        note(f"{view.id} {view.status}: {counts_line(view)}")
        for error in (batch.get("errors") or {}).get("data") or []:
            note(f"  {error_line(error.get('line'), error.get('code'), error.get('message'))}")
        for kind, path in (extra.get("downloaded") or {}).items():
            if path:
                typer.echo(f"{kind}: {path}")
    raise typer.Exit(EXIT_COMPLETED if view.status == "completed" else EXIT_NOT_COMPLETED)


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--metadata takes key=value, not {pair!r}", EXIT_USAGE)
        metadata[key] = value
    return metadata or None


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
