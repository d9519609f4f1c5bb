"""`overnight run INPUT -o OUTPUT`: a batch file through the whole service in
this process, no server to start, resumable by running it again.

The state directory (default: the input's SHA-256 under the user's cache)
holds the service's SQLite database and blobs; `offline.py` finds the
batch made of this input there, or makes it. Ctrl-C hands the work back
cleanly (exit 130); the same command later goes on from there, as it does
after `kill -9` or a power cut."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from overnight.cli.common import (
    EXIT_COMPLETED,
    EXIT_INTERRUPTED,
    EXIT_NOT_COMPLETED,
    ConfigOption,
    JsonOption,
    console,
    fail,
    load_cli_settings,
    note,
    print_json,
)
from overnight.cli.locations import (
    Input,
    default_state_dir,
    endpoint_of_file,
    errors_path_for,
    open_result,
    result_target_problem,
    take_input,
)
from overnight.cli.progress import BatchProgress, BatchView, counts_line, error_line

#: How long the end of a run (or Ctrl-C) waits for the worker to stop
#: before leaving without it.
STOP_TIMEOUT = 15.0

if TYPE_CHECKING:  # the service is imported inside the command: `--help` stays quick
    from overnight.domain.batch import Batch
    from overnight.offline import OfflineRun
    from overnight.settings import Settings


def run(
    source: Annotated[
        str,
        typer.Argument(
            metavar="INPUT", help="A JSONL file of requests: a path, - (stdin) or s3://bucket/key."
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Where the results go: a path, - (stdout) or s3://bucket/key."
        ),
    ],
    errors: Annotated[
        str | None,
        typer.Option(
            "--errors",
            help="Where failed requests go (default: OUTPUT with .errors.jsonl).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Where the run's database and blobs live "
            "(default: ~/.cache/overnight/runs/<input's SHA-256>).",
            show_default=False,
        ),
    ] = None,
    ordered: Annotated[
        bool, typer.Option("--ordered", help="Write the results in input order.")
    ] = False,
    endpoint: Annotated[
        str | None,
        typer.Option(help="Default: the `url` of the input's first line.", show_default=False),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    json_output: JsonOption = False,
) -> None:
    """Run a batch file offline, in this process, with the embedded model
    unless a config names others. Run the same command again after Ctrl-C,
    kill or power cut to go on where it stopped."""
    import uvloop

    _log_to_console(log_level)
    settings = load_cli_settings(config)
    from overnight.backends.availability import why_models_cannot_run

    if problem := why_models_cannot_run(settings):
        fail(problem)
    errors = errors or errors_path_for(output)
    for target in (output, errors):
        if problem := result_target_problem(target):
            fail(problem)
    job = _Job(source, output, errors, state_dir, ordered, endpoint)
    try:
        code = uvloop.run(job.run(settings, quiet=json_output))
    except KeyboardInterrupt:  # before the run could take Ctrl-C over
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


class _Job:
    def __init__(
        self,
        source: str,
        output: str,
        errors: str,
        state_dir: Path | None,
        ordered: bool,
        endpoint: str | None,
    ) -> None:
        self.source = source
        self.output = output
        self.errors = errors
        self.state_dir = state_dir
        self.ordered = ordered
        self.endpoint = endpoint

    async def run(self, settings: Settings, *, quiet: bool) -> int:
        from overnight.errors import OvernightError
        from overnight.offline import OfflineRun, RunFailed, offline_settings
        from overnight.runtime import DataDirInUse

        taken = await self._take_input(settings)
        state = self.state_dir or default_state_dir(taken.sha256)
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():  # a second Ctrl-C: no more waiting
                _leave(EXIT_INTERRUPTED, "stopped at once; the next run goes on from here")
            stop.set()

        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, on_signal)
        offline = OfflineRun(offline_settings(settings, state))
        try:
            try:
                await offline.start()
            except DataDirInUse:
                fail(f"{state} is in use by another overnight process (a run of the same input?)")
            code = EXIT_INTERRUPTED
            try:
                code = await self._work(offline, taken, state, settings, stop, quiet)
            finally:
                with _leave_unless_done(STOP_TIMEOUT, code):
                    await offline.stop()
            return code
        except RunFailed as failed:
            fail(str(failed), EXIT_NOT_COMPLETED)
        except OvernightError as refused:  # the service refused the batch: a bad --endpoint
            fail(refused.message)
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
            if taken.spooled:
                taken.path.unlink(missing_ok=True)

    async def _work(
        self,
        offline: OfflineRun,
        taken: Input,
        state: Path,
        settings: Settings,
        stop: asyncio.Event,
        quiet: bool,
    ) -> int:
        """Attach, follow, write the results, report: the exit code."""
        from overnight.offline import Interrupted

        batch, resumed = await self._attach(offline, taken, state, quiet)
        with BatchProgress(console, tokens=True, enabled=not quiet) as progress:
            ended = await offline.follow(batch, lambda b: progress.update(_view(b)), stop)
        if ended is None:
            return self._stopped(quiet, batch.id)
        try:
            async with (
                open_result(self.output, settings) as output,
                open_result(self.errors, settings) as errors,
            ):
                await offline.write_results(
                    ended, output=output, errors=errors, ordered=self.ordered, stop=stop
                )
        except Interrupted:
            return self._stopped(quiet, batch.id)
        return self._report(ended, resumed, state, quiet)

    async def _attach(
        self, offline: OfflineRun, taken: Input, state: Path, quiet: bool
    ) -> tuple[Batch, bool]:
        """The batch an earlier run of this input made (True: resumed), or
        a new one."""
        batch = await offline.find(taken.sha256)
        if batch is not None:
            if not quiet:
                done = f"{batch.request_counts.done:,} of {batch.request_counts.total:,}"
                note(f"resuming {batch.id}: {done} already done; state in {state}")
            return batch, True
        endpoint = self.endpoint or endpoint_of_file(taken.path) or "/v1/chat/completions"
        batch = await offline.submit(
            taken.path, name=taken.name, sha256=taken.sha256, endpoint=endpoint
        )
        if not quiet:
            note(f"running {batch.id} ({taken.name}); state in {state}")
        return batch, False

    async def _take_input(self, settings: Settings) -> Input:
        try:
            return await take_input(self.source, settings)
        except (OSError, ValueError) as exc:
            fail(str(exc))
        except Exception as exc:  # an S3 refusal (botocore's errors), in one line
            fail(f"cannot read {self.source}: {exc}")

    def _stopped(self, quiet: bool, batch_id: str) -> int:
        if quiet:
            print_json({"batch": batch_id, "status": "interrupted"})
        else:
            note(f"stopped; {batch_id} goes on when you run the same command again")
        return EXIT_INTERRUPTED

    def _report(self, batch: Batch, resumed: bool, state: Path, quiet: bool) -> int:
        view = _view(batch)
        if quiet:
            print_json(
                {
                    "batch": batch.id,
                    "status": view.status,
                    "request_counts": {
                        "total": view.total,
                        "completed": view.completed,
                        "failed": view.failed,
                    },
                    "usage": _usage(batch),
                    "output": self.output,
                    "errors": self.errors,
                    "state_dir": str(state),
                    "resumed": resumed,
                }
            )
        else:
            note(f"{batch.id} {view.status}: {counts_line(view)}")
            for error in batch.errors:
                note(f"  {error_line(error.line, error.code, error.message)}")
            note(f"output: {self.output}\nerrors: {self.errors}")
        return EXIT_COMPLETED if view.status == "completed" else EXIT_NOT_COMPLETED


def _view(batch: Batch) -> BatchView:
    counts = batch.request_counts
    return BatchView(
        id=batch.id,
        status=batch.status.value,
        total=counts.total,
        completed=counts.completed,
        failed=counts.failed,
        total_tokens=batch.usage.total_tokens,
    )


def _usage(batch: Batch) -> dict[str, Any]:
    usage = batch.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _log_to_console(level: str) -> None:
    """Log lines print above the progress bar instead of through it."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextmanager
def _leave_unless_done(seconds: float, code: int) -> Iterator[None]:
    """Leave the process with `code` if the block (the worker's stop) takes
    longer than `seconds`. Nothing is lost by leaving: what ran is in the
    state directory, as after `kill -9`, and the next run goes on from it."""
    timer = threading.Timer(
        seconds,
        _leave,
        (
            code,
            f"the worker did not stop within {seconds:.0f} s; leaving without it "
            "(nothing is lost: the next run goes on from here)",
        ),
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _leave(code: int, message: str) -> NoReturn:
    note(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
