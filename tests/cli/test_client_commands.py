"""`overnight files ...` and `overnight batches ...` against a live server,
as a script drives them: `--json` parsed, exit codes checked, and the one
line a person reads when something is wrong."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest
from click.testing import Result
from typer.testing import CliRunner

from overnight.cli import app
from overnight.cli.remote import Remote

from cli.conftest import API_KEY, LiveServer
from helpers import chat_lines, free_port, jsonl, read_jsonl


def cli(server: LiveServer, *args: str, key: str = API_KEY) -> Result:
    """The command as a user types it, with the server and key from the
    environment ($OVERNIGHT_BASE_URL, $OVERNIGHT_API_KEY)."""
    runner = CliRunner(env={"OVERNIGHT_BASE_URL": server.url, "OVERNIGHT_API_KEY": key})
    return runner.invoke(app, list(args))


def ok(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_error_line(result: Result) -> str:
    """A refused command prints exactly one line, on stderr, and no traceback."""
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def uploads_named(server: LiveServer, name: str) -> list[dict[str, Any]]:
    files = ok(cli(server, "files", "list", "--json", "--limit", "1000"))["data"]
    return [f for f in files if f["filename"] == name]


def requests_file(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(jsonl(lines))
    return path


# ---------------------------------------------------------------------- files


def test_files_upload_list_get_download_delete(live_server: LiveServer, tmp_path: Path) -> None:
    source = requests_file(tmp_path / "requests.jsonl", chat_lines(5))

    uploaded = ok(cli(live_server, "files", "upload", str(source), "--json"))
    assert uploaded["filename"] == "requests.jsonl" and uploaded["bytes"] == source.stat().st_size

    listed = ok(cli(live_server, "files", "list", "--json"))
    assert uploaded["id"] in [f["id"] for f in listed["data"]]
    table = cli(live_server, "files", "list").stdout
    assert table.splitlines()[0].split() == ["ID", "BYTES", "CREATED", "PURPOSE", "FILENAME"]
    assert uploaded["id"] in table

    assert ok(cli(live_server, "files", "get", uploaded["id"], "--json")) == uploaded

    target = tmp_path / "back" / "copy.jsonl"
    saved = ok(cli(live_server, "files", "download", uploaded["id"], "-o", str(target), "--json"))
    assert saved["bytes"] == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()
    # Into a folder: under the file's name, readable as any new file is.
    into = ok(
        cli(live_server, "files", "download", uploaded["id"], "-o", str(target.parent), "--json")
    )
    assert into["path"] == str(target.parent / "requests.jsonl")
    assert (target.parent / "requests.jsonl").read_bytes() == source.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    piped = cli(live_server, "files", "download", uploaded["id"])
    assert piped.exit_code == 0 and piped.stdout_bytes == source.read_bytes()

    deleted = ok(cli(live_server, "files", "delete", uploaded["id"], "--json"))
    assert deleted == {"id": uploaded["id"], "object": "file", "deleted": True}
    gone = cli(live_server, "files", "get", uploaded["id"])
    assert gone.exit_code == 2
    assert (
        one_error_line(gone) == f"error: No such file: {uploaded['id']} (file_not_found) [HTTP 404]"
    )


def test_a_large_file_goes_up_in_parts_through_the_uploads_api(
    live_server: LiveServer, tmp_path: Path
) -> None:
    source = requests_file(tmp_path / "large.jsonl", chat_lines(60))
    size = source.stat().st_size
    part_size = size // 4 + 1  # four parts

    uploaded = ok(
        cli(live_server, "files", "upload", str(source), "--part-size", str(part_size), "--json")
    )
    assert uploaded["bytes"] == size
    copy = cli(live_server, "files", "download", uploaded["id"])
    assert copy.stdout_bytes == source.read_bytes()
    with sqlite3.connect(live_server.settings.data_dir / "overnight.db") as db:
        uploads = db.execute(
            "SELECT bytes, status FROM uploads WHERE filename = 'large.jsonl'"
        ).fetchall()
    assert uploads == [(size, "completed")]


# -------------------------------------------------------------------- batches


def test_submit_wait_follows_the_batch_and_downloads_its_results(
    live_server: LiveServer, tmp_path: Path
) -> None:
    lines = chat_lines(25)
    lines[3]["body"]["x_fake"] = {"status": 400}
    lines[7]["body"]["x_fake"] = {"status": 400}
    source = requests_file(tmp_path / "night.jsonl", lines)
    results = tmp_path / "results"

    result = cli(
        live_server,
        "batches",
        "submit",
        str(source),
        "--wait",
        "--output",
        str(results),
        "--metadata",
        "team=search",
        "--metadata",
        "night=1",
        "--interval",
        "0.1",
        "--json",
    )
    answer = ok(result)
    batch = answer["batch"]
    assert batch["status"] == "completed"
    assert batch["metadata"] == {"team": "search", "night": "1"}
    assert batch["endpoint"] == "/v1/chat/completions"  # from the file's first line
    assert batch["request_counts"] == {"total": 25, "completed": 23, "failed": 2}
    output = read_jsonl(Path(answer["downloaded"]["output"]).read_text())
    errors = read_jsonl(Path(answer["downloaded"]["errors"]).read_text())
    assert Path(answer["downloaded"]["output"]).parent == results
    assert sorted(r["custom_id"] for r in output + errors) == sorted(
        line["custom_id"] for line in lines
    )
    assert {r["custom_id"] for r in errors} == {"req-3", "req-7"}

    shown = ok(cli(live_server, "batches", "get", batch["id"], "--json"))
    assert shown["batch"]["id"] == batch["id"] and shown["eta_seconds"] is None
    assert shown["error_groups"] == [
        {
            "code": "http_400",
            "count": 2,
            "message": shown["error_groups"][0]["message"],
            "examples": ["req-3", "req-7"],
        }
    ]
    table = cli(live_server, "batches", "get", batch["id"]).stdout
    assert "25/25 done, 2 failed" in table and "http_400" in table

    listed = ok(cli(live_server, "batches", "list", "--json"))
    assert batch["id"] in [b["id"] for b in listed["data"]]
    assert batch["id"] in cli(live_server, "batches", "list").stdout


def test_submit_watch_download_as_separate_steps(live_server: LiveServer, tmp_path: Path) -> None:
    source = requests_file(tmp_path / "steps.jsonl", chat_lines(12, prefix="step"))
    submitted = ok(cli(live_server, "batches", "submit", str(source), "--json"))
    batch_id = submitted["batch"]["id"]
    assert submitted["file"]["filename"] == "steps.jsonl"

    watched = ok(cli(live_server, "batches", "watch", batch_id, "--interval", "0.1", "--json"))
    assert watched["batch"]["status"] == "completed"

    downloaded = ok(
        cli(live_server, "batches", "download", batch_id, "-o", str(tmp_path / "d"), "--json")
    )
    assert downloaded["downloaded"]["errors"] is None  # nothing failed
    rows = read_jsonl(Path(downloaded["downloaded"]["output"]).read_text())
    assert sorted(r["custom_id"] for r in rows) == sorted(f"step-{i}" for i in range(12))


def test_a_batch_that_fails_validation_exits_1_with_its_errors_by_code(
    live_server: LiveServer, tmp_path: Path
) -> None:
    source = tmp_path / "broken.jsonl"
    source.write_bytes(jsonl(chat_lines(3)) + b"{not json\n" + jsonl(chat_lines(1, prefix="x")))

    result = cli(live_server, "batches", "submit", str(source), "--wait", "--interval", "0.1")
    assert result.exit_code == 1, result.output
    assert "failed" in result.stderr and "line 4" in result.stderr
    batch_id = result.stderr.split("created ")[1].split()[0]
    shown = ok(cli(live_server, "batches", "get", batch_id, "--json"))
    assert [(g["code"], g["count"], g["examples"]) for g in shown["error_groups"]] == [
        (shown["batch"]["errors"]["data"][0]["code"], 1, ["line 4"])
    ]


def test_cancel_ends_a_batch_and_watch_then_exits_1(
    live_server: LiveServer, tmp_path: Path
) -> None:
    # One request at a time, 50 ms each: a few seconds of work to cancel.
    lines = chat_lines(60, model="fake-small", extra={"x_fake": {"latency": 0.05}})
    source = requests_file(tmp_path / "slow.jsonl", lines)
    batch_id = ok(cli(live_server, "batches", "submit", str(source), "--json"))["batch"]["id"]
    while ok(cli(live_server, "batches", "get", batch_id, "--json"))["batch"]["status"] != (
        "in_progress"
    ):
        time.sleep(0.05)

    cancelled = ok(cli(live_server, "batches", "cancel", batch_id, "--json"))
    assert cancelled["batch"]["status"] in ("cancelling", "cancelled")
    watched = cli(live_server, "batches", "watch", batch_id, "--interval", "0.1", "--json")
    assert watched.exit_code == 1
    batch = json.loads(watched.stdout)["batch"]
    assert batch["status"] == "cancelled"
    counts = batch["request_counts"]
    assert counts["completed"] + counts["failed"] == counts["total"] == 60
    assert counts["completed"] < 60


def test_download_of_a_batch_still_running_is_refused(
    live_server: LiveServer, tmp_path: Path
) -> None:
    lines = chat_lines(30, model="fake-small", extra={"x_fake": {"latency": 0.05}})
    source = requests_file(tmp_path / "running.jsonl", lines)
    batch_id = ok(cli(live_server, "batches", "submit", str(source), "--json"))["batch"]["id"]
    try:
        early = cli(live_server, "batches", "download", batch_id)
        assert early.exit_code == 2
        assert "its results are not ready" in one_error_line(early)
    finally:
        cli(live_server, "batches", "cancel", batch_id)


def test_partial_download_retry_and_merged_download(
    live_server: LiveServer, tmp_path: Path
) -> None:
    lines = chat_lines(20, prefix="again")
    for i in (2, 11):
        lines[i]["body"]["x_fake"] = {"status": 400}
    source = requests_file(tmp_path / "again.jsonl", lines)
    batch_id = ok(cli(live_server, "batches", "submit", str(source), "--json"))["batch"]["id"]
    # Any moment: what is written so far, whole files (maybe empty ones).
    early = ok(
        cli(
            live_server,
            "batches",
            "download",
            batch_id,
            "--partial",
            "-o",
            str(tmp_path / "p"),
            "--json",
        )
    )
    assert Path(early["downloaded"]["output"]).name == f"{batch_id}_output.partial.jsonl"
    assert len(read_jsonl(Path(early["downloaded"]["output"]).read_text())) <= 18
    ok(cli(live_server, "batches", "watch", batch_id, "--interval", "0.1", "--json"))

    retried = ok(cli(live_server, "batches", "retry", batch_id, "--outcome", "failed", "--json"))
    again = retried["batch"]
    assert again["metadata"]["retry_of"] == batch_id
    watched = cli(live_server, "batches", "watch", again["id"], "--interval", "0.1", "--json")
    assert json.loads(watched.stdout)["batch"]["request_counts"]["total"] == 2
    merged = ok(
        cli(
            live_server,
            "batches",
            "download",
            again["id"],
            "--merged",
            "-o",
            str(tmp_path / "m"),
            "--json",
        )
    )
    rows = read_jsonl(Path(merged["downloaded"]["output"]).read_text())
    rows += read_jsonl(Path(merged["downloaded"]["errors"]).read_text())
    assert sorted(r["custom_id"] for r in rows) == sorted(line["custom_id"] for line in lines)
    refused = cli(live_server, "batches", "retry", batch_id, "--outcome", "expired")
    assert refused.exit_code == 2 and "nothing_to_retry" in one_error_line(refused)


# ------------------------------------------------------------ what goes wrong


def test_an_unknown_batch_is_one_line_and_exit_2(live_server: LiveServer) -> None:
    result = cli(live_server, "batches", "get", "batch_0123456789abcdef")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: No such batch: batch_0123456789abcdef")


def test_a_refused_key_is_one_line_and_exit_2(live_server: LiveServer) -> None:
    result = cli(live_server, "batches", "list", key="sk-wrong")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"{live_server.url} refused the API key" in line and "OVERNIGHT_API_KEY" in line


def test_an_unreachable_server_is_one_line_and_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["files", "list", "--base-url", url])
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"error: cannot reach an overnight server at {url} (connection refused); start one "
        "with `overnight serve`, or point --base-url / OVERNIGHT_BASE_URL at it"
    )


@pytest.mark.parametrize("command", [["files", "upload"], ["batches", "submit", "--wait"]])
def test_a_missing_or_unreadable_input_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str]
) -> None:
    # Refused before any server is asked: the URL leads nowhere.
    where = ["--base-url", f"http://127.0.0.1:{free_port()}"]
    missing = tmp_path / "missing.jsonl"
    result = CliRunner().invoke(app, [*command, str(missing), *where])
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: no such file: {missing}"
    result = CliRunner().invoke(app, [*command, str(tmp_path), *where])
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: not a file: {tmp_path}"


def test_an_empty_file_is_refused_without_a_line_number(
    live_server: LiveServer, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = cli(live_server, "batches", "submit", str(empty), "--wait", "--interval", "0.1")
    assert result.exit_code == 1, result.output
    assert "  empty_file: " in result.stderr and "line None" not in result.stderr
    assert "0 done, 0 failed" in result.stderr and "/?" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metadata", "no-equals-sign"], "--metadata takes key=value"),
        (["--window", "1m"], "completion_window must be between"),
    ],
)
def test_a_bad_submission_is_one_line_and_exit_2(
    live_server: LiveServer, tmp_path: Path, args: list[str], message: str
) -> None:
    source = requests_file(tmp_path / f"{tmp_path.name}.jsonl", chat_lines(1))  # a unique name
    result = cli(live_server, "batches", "submit", str(source), *args)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    # A refused create leaves no upload behind to pile up on every retry.
    assert not uploads_named(live_server, source.name)


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_upload(
    live_server: LiveServer, tmp_path: Path
) -> None:
    source = requests_file(tmp_path / f"{tmp_path.name}.jsonl", chat_lines(1))  # a unique name
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli(
        live_server, "batches", "submit", str(source), "--wait", "-o", str(blocker / "out")
    )
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"error: cannot write into {blocker / 'out'}")
    assert not uploads_named(live_server, source.name)


def test_ctrl_c_during_an_upload_says_so_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> NoReturn:
        raise KeyboardInterrupt

    monkeypatch.setattr(Remote, "upload_file", interrupted)
    source = requests_file(tmp_path / "night.jsonl", chat_lines(1))
    url = f"http://127.0.0.1:{free_port()}"  # never reached: the upload is where it stops
    for command in (["batches", "submit", str(source), "--wait"], ["files", "upload", str(source)]):
        result = CliRunner().invoke(app, [*command, "--base-url", url])
        assert result.exit_code == 130, result.output
        assert "interrupted: night.jsonl was not uploaded" in result.stderr


def test_ctrl_c_while_downloading_results_says_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = {"id": "batch_0f", "status": "completed", "output_file_id": "file-0f"}
    monkeypatch.setattr(Remote, "get_batch", lambda self, batch_id: ended)
    monkeypatch.setattr(Remote, "get_file", lambda self, file_id: {"id": file_id, "bytes": 9})

    def interrupted(*args: Any, **kwargs: Any) -> NoReturn:
        raise KeyboardInterrupt

    monkeypatch.setattr(Remote, "download", interrupted)
    url = f"http://127.0.0.1:{free_port()}"  # never reached: every call is replaced
    result = CliRunner().invoke(
        app, ["batches", "download", "batch_0f", "-o", str(tmp_path), "--base-url", url]
    )
    assert result.exit_code == 130, result.output
    assert f"overnight batches download batch_0f -o {tmp_path}" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no half file left behind
