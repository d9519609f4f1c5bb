"""`overnight run`: a file through the in-process service against the fake
upstream, its two result files, the state directory the input's hash
names, input order on request, stdin and S3 as places, and a second run
that finds the finished batch and sends nothing again."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import Result
from typer.testing import CliRunner

from overnight.cli import app
from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, jsonl, read_jsonl, write_config
from inprocess import FAST_LOOPS


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def config(tmp_path: Path, upstream: FakeUpstream) -> Path:
    return write_config(
        tmp_path / "overnight.toml",
        [fake_model(upstream.url)],
        chunk_lines=10,
        **FAST_LOOPS,
    )


def run(cache: Path, *args: str, stdin: bytes | None = None) -> Result:
    runner = CliRunner(env={"XDG_CACHE_HOME": str(cache)})
    return runner.invoke(app, ["run", *args], input=stdin)


def ok(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ids(path: Path) -> list[str]:
    return [row["custom_id"] for row in read_jsonl(path.read_text())]


def test_run_writes_both_files_and_running_it_again_sends_nothing(
    tmp_path: Path, cache: Path, config: Path, upstream: FakeUpstream
) -> None:
    lines = chat_lines(40)
    for number in (5, 17, 33):
        lines[number]["body"]["x_fake"] = {"status": 400}
    source = tmp_path / "night.jsonl"
    source.write_bytes(jsonl(lines))
    output = tmp_path / "out" / "results.jsonl"
    upstream.reset_stats()

    first = ok(run(cache, str(source), "-o", str(output), "-c", str(config), "--json"))
    assert first["status"] == "completed" and first["resumed"] is False
    assert first["request_counts"] == {"total": 40, "completed": 37, "failed": 3}
    errors = tmp_path / "out" / "results.errors.jsonl"
    assert first["errors"] == str(errors)
    assert sorted(ids(output) + ids(errors)) == sorted(line["custom_id"] for line in lines)
    assert sorted(ids(errors)) == ["req-17", "req-33", "req-5"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert first["state_dir"] == str(cache / "overnight" / "runs" / digest[:16])
    sent = upstream.stats()["requests"]
    assert sent == 40

    written = sorted(ids(output))
    output.unlink()
    again = run(cache, str(source), "-o", str(output), "-c", str(config))
    assert again.exit_code == 0, again.output
    assert "resuming batch_" in again.stderr and "40 of 40 already done" in again.stderr
    assert upstream.stats()["requests"] == sent  # nothing ran twice
    assert sorted(ids(output)) == written and len(written) == 37
    umask = os.umask(0o022)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_ordered_writes_results_in_input_order(
    tmp_path: Path, cache: Path, config: Path, upstream: FakeUpstream
) -> None:
    # Uneven latencies: answers come back in an order of their own.
    upstream.configure(latency=0.001, latency_jitter=0.02, seed=7)
    lines = chat_lines(80, prefix="o")
    for number in range(0, 80, 9):
        lines[number]["body"]["x_fake"] = {"status": 400}
    source = tmp_path / "ordered.jsonl"
    source.write_bytes(jsonl(lines))
    wanted = [line["custom_id"] for line in lines]

    unordered = tmp_path / "unordered.jsonl"
    ok(run(cache, str(source), "-o", str(unordered), "-c", str(config), "--json"))
    assert ids(unordered) != [i for i in wanted if i in set(ids(unordered))]  # shuffled

    ordered = tmp_path / "ordered-out.jsonl"
    ok(run(cache, str(source), "-o", str(ordered), "-c", str(config), "--ordered", "--json"))
    failed = set(wanted[0::9])
    assert ids(ordered) == [i for i in wanted if i not in failed]
    assert ids(tmp_path / "ordered-out.errors.jsonl") == wanted[0::9]


def test_ordered_puts_back_a_batch_grouped_by_prompt_prefix(
    tmp_path: Path, cache: Path, config: Path
) -> None:
    # Three system prompts in shuffled order over 6 chunks: validation
    # groups the lines by prompt, so the chunks no longer follow the input.
    lines = chat_lines(60, prefix="g")
    systems = [f"You are helper {n}. " * 10 for n in range(3)]
    for number, line in enumerate(lines):
        system = {"role": "system", "content": systems[(number * 7) % 3]}
        line["body"]["messages"].insert(0, system)
    lines[11]["body"]["x_fake"] = {"status": 400}
    source = tmp_path / "prompts.jsonl"
    source.write_bytes(jsonl(lines))
    wanted = [line["custom_id"] for line in lines]
    system_of = {line["custom_id"]: line["body"]["messages"][0]["content"] for line in lines}

    unordered = tmp_path / "grouped.jsonl"
    ok(run(cache, str(source), "-o", str(unordered), "-c", str(config), "--json"))
    prompts = [system_of[i] for i in ids(unordered)]
    assert sum(a != b for a, b in itertools.pairwise(prompts)) == 2  # grouped

    ordered = tmp_path / "in-order.jsonl"
    ok(run(cache, str(source), "-o", str(ordered), "-c", str(config), "--ordered", "--json"))
    assert ids(ordered) == [i for i in wanted if i != "g-11"]
    assert ids(tmp_path / "in-order.errors.jsonl") == ["g-11"]


def test_stdin_and_a_path_with_the_same_bytes_are_the_same_run(
    tmp_path: Path, cache: Path, config: Path
) -> None:
    data = jsonl(chat_lines(12, prefix="s"))
    piped = ok(
        run(
            cache, "-", "-o", str(tmp_path / "piped.jsonl"), "-c", str(config), "--json", stdin=data
        )
    )
    assert piped["resumed"] is False and len(ids(tmp_path / "piped.jsonl")) == 12
    assert list((cache / "overnight" / "spool").iterdir()) == []  # the copy of stdin is gone

    source = tmp_path / "same.jsonl"
    source.write_bytes(data)
    from_path = ok(
        run(cache, str(source), "-o", str(tmp_path / "p.jsonl"), "-c", str(config), "--json")
    )
    assert from_path["resumed"] is True and from_path["batch"] == piped["batch"]


def test_s3_in_and_out(
    tmp_path: Path, cache: Path, upstream: FakeUpstream, s3_endpoint: str
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="nightly")
    lines = chat_lines(15, prefix="s3")
    lines[4]["body"]["x_fake"] = {"status": 400}
    s3.put_object(Bucket="nightly", Key="in/requests.jsonl", Body=jsonl(lines))
    config = write_config(
        tmp_path / "s3.toml",
        [fake_model(upstream.url)],
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        **FAST_LOOPS,
    )

    answer = ok(
        run(
            cache,
            "s3://nightly/in/requests.jsonl",
            "-o",
            "s3://nightly/out/results.jsonl",
            "-c",
            str(config),
            "--json",
        )
    )
    assert answer["errors"] == "s3://nightly/out/results.errors.jsonl"
    output = s3.get_object(Bucket="nightly", Key="out/results.jsonl")["Body"].read().decode()
    errors = s3.get_object(Bucket="nightly", Key="out/results.errors.jsonl")["Body"].read()
    assert len(read_jsonl(output)) == 14
    assert [row["custom_id"] for row in read_jsonl(errors.decode())] == ["s3-4"]


def test_an_invalid_file_ends_1_naming_the_line(tmp_path: Path, cache: Path, config: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(jsonl(chat_lines(1)) + b'{"custom_id": "x"}\n')
    result = run(cache, str(source), "-o", str(tmp_path / "o.jsonl"), "-c", str(config))
    assert result.exit_code == 1, result.output
    assert "failed" in result.stderr and "line 2:" in result.stderr


def test_a_batch_the_service_refuses_is_one_line_and_exit_2(
    tmp_path: Path, cache: Path, config: Path
) -> None:
    source = tmp_path / "refused.jsonl"
    source.write_bytes(jsonl(chat_lines(1)))
    result = run(
        cache,
        str(source),
        "-o",
        str(tmp_path / "o.jsonl"),
        "-c",
        str(config),
        "--endpoint",
        "/v1/x",
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Unsupported endpoint '/v1/x'")


def test_a_missing_input_is_one_line_and_exit_2(tmp_path: Path, cache: Path) -> None:
    result = run(cache, str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: no such input file: {tmp_path / 'nope.jsonl'}"


def test_an_output_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, cache: Path
) -> None:
    source = tmp_path / "night.jsonl"
    source.write_bytes(jsonl(chat_lines(1)))
    folder = tmp_path / "results"
    folder.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, said in [
        (folder, f"error: {folder} is a folder; name a file in it"),
        (blocker / "out.jsonl", f"error: cannot write {blocker / 'out.jsonl'}"),
    ]:
        result = run(cache, str(source), "-o", str(target))
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(said), result.stderr
    assert not (cache / "overnight" / "runs").exists()  # refused before any work
    assert list(folder.iterdir()) == []


def test_a_state_dir_in_use_is_one_line_and_exit_2(
    tmp_path: Path, cache: Path, config: Path
) -> None:
    source = tmp_path / "busy.jsonl"
    source.write_bytes(jsonl(chat_lines(1)))
    state = tmp_path / "state"
    state.mkdir()
    with (state / "overnight.lock").open("a") as held:  # what a running run holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        where = ["-o", str(tmp_path / "o.jsonl"), "-c", str(config), "--state-dir", str(state)]
        result = run(cache, str(source), *where)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {state} is in use by another overnight process (a run of the same input?)"
    )
