"""The embedded extra as a plain `pip install 'overnight[embedded]'` leaves
it: llama.cpp built natively (pip's default build, no CMAKE_ARGS), on this
machine's CPU. The Makefile's portable build avoids the CPU paths that
crashed; a pip user gets the native one, so overnight keeps llama.cpp off
the crashing path at run time instead (`repack = false`, the default: no
extra buffer types, see docs/configuration.md). This shows what that does.

    # once (minutes): the wheel pip would build, kept outside the checkout
    pip wheel --no-cache-dir --no-deps -w ../native-wheel llama-cpp-python==0.3.36
    python bench/native_engine.py --wheels ../native-wheel

1. Builds overnight's wheel (`python -m build`) and runs the README's
   virtualenv line for the extra in a fresh home directory, pip taking
   llama-cpp-python from --wheels rather than building it again.
2. Says what the CPU has (AMX or not) and what llama.cpp was built with.
3. Serves the embedded model with `overnight serve`, repack off (the
   default) and on: a batch of chats and one of embeddings each, completed
   or not (a crashed worker fails its chunks as `chunk_failed`).
4. Loads a q4_0 copy of the model (a type x86 CPUs repack) both ways and
   reads llama.cpp's load log: whether weights went into an extra buffer
   type, that is, whether the switch is honoured by this build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, free_port, table, wait_until_ended, wait_until_serving
from overnight.settings import EMBEDDED_MODEL_NAME

#: Fast loops and few attempts: a worker that crashes on every chunk fails
#: it in seconds rather than minutes.
FAST = {
    "OVERNIGHT_POLL_INTERVAL": "0.05",
    "OVERNIGHT_HEARTBEAT_INTERVAL": "1",
    "OVERNIGHT_LEASE_TTL": "3",
    "OVERNIGHT_MAX_CHUNK_ATTEMPTS": "2",
}

REQUANTIZE_AND_LOAD = """
import sys, ctypes, llama_cpp
from overnight.backends.llamacpp import load_llama
from overnight.settings import bundled_gguf_path
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
params.allow_requantize = True
out = sys.argv[1].encode()
assert llama_cpp.llama_model_quantize(str(bundled_gguf_path()).encode(), out, ctypes.byref(params)) == 0
for repack in (False, True):
    print(f"=== repack={repack}", file=sys.stderr, flush=True)
    model = load_llama(repack=repack, model_path=sys.argv[1], n_ctx=512, verbose=True)
    model.create_completion("Hello", max_tokens=4)
    model.close()
"""


def embedded_install_line() -> str:
    """The README's virtualenv line for the embedded extra."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    (line,) = (line for line in blocks[2].splitlines() if line.startswith("python3 -m venv"))
    return line


def build_wheel(out: Path) -> Path:
    outside = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        env=outside,
    )
    (wheel,) = out.glob("overnight-*.whl")
    return wheel


def install(home: Path, python: str, wheels: Path, wheel: Path) -> tuple[Path, float]:
    """Run the README line; the virtualenv's bin/ and the seconds it took."""
    tools = home / "tools"
    tools.mkdir(parents=True)
    (tools / "python3").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    (tools / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{tools}:/usr/bin:/bin", PIP_FIND_LINKS=str(wheels))
    line = embedded_install_line().replace(
        "'overnight[embedded]'", shlex.quote(f"{wheel}[embedded]")
    )
    started = time.perf_counter()
    subprocess.run(["bash", "-c", line], cwd=home, env=env, check=True, capture_output=True)
    (made,) = home.glob("*/bin/overnight")
    return made.parent, time.perf_counter() - started


def cpu_and_build(bin_dir: Path) -> tuple[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    name = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    flags = set(re.search(r"flags\s*:\s*(.*)", cpuinfo).group(1).split())  # type: ignore[union-attr]
    cpu = f"{name.group(1) if name else 'unknown'}; AMX: {'amx_int8' in flags}"
    built = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return cpu, built


@contextlib.contextmanager
def serving(bin_dir: Path, workdir: Path, config: Path | None) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = workdir / f"server-{port}.log"
    command = [str(bin_dir / "overnight"), "serve", "--port", str(port)]
    command += ["--data-dir", str(workdir / f"data-{port}")]
    if config is not None:
        command += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OVERNIGHT_"))}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=workdir, env={**env, **FAST}, stdout=output, stderr=output
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url, log)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_batches(url: str, prompts: int, max_tokens: int) -> tuple[str, str, str]:
    """A chat batch and an embeddings batch: (chats done, embeddings done, tokens/s)."""
    chats = [
        {
            "custom_id": f"chat-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": EMBEDDED_MODEL_NAME,
                "messages": [
                    {"role": "user", "content": f"Write a sentence about the number {i}."}
                ],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        }
        for i in range(prompts)
    ]
    embeddings = [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDED_MODEL_NAME, "input": text},
        }
        for i, text in enumerate(["the cat sat", "a dog ran", "hello world"])
    ]
    results = []
    rate = "-"
    with openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0) as client:
        for lines, endpoint in ((chats, "/v1/chat/completions"), (embeddings, "/v1/embeddings")):
            body = "".join(json.dumps(line) + "\n" for line in lines).encode()
            file = client.files.create(file=("in.jsonl", body), purpose="batch")
            started = time.perf_counter()
            batch = client.batches.create(
                input_file_id=file.id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
            )
            batch = wait_until_ended(client, batch, 0.05)
            seconds = time.perf_counter() - started
            counts = batch.request_counts
            done = counts.completed if counts else 0
            results.append(f"{done}/{len(lines)}")
            if endpoint == "/v1/chat/completions" and batch.usage and done:
                rate = f"{batch.usage.output_tokens / seconds:.1f}"
    return results[0], results[1], rate


def worker_crashes(log: Path) -> int:
    """Worker processes that died of a signal, as the supervisor logged them."""
    return len(re.findall(r"exited with -?\d+; restarting", log.read_text()))


def repack_check(bin_dir: Path, workdir: Path) -> dict[bool, str]:
    """For a q4_0 copy of the model: the extra buffer type llama.cpp put
    weights in, with repack off and on."""
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", REQUANTIZE_AND_LOAD, str(workdir / "q4_0.gguf")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    seen: dict[bool, str] = {}
    for part in done.stderr.split("=== repack=")[1:]:
        repack = part.startswith("True")
        buffers = re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", part)
        extra = [
            f"{name} {size} MiB" for name, size in buffers if name not in ("CPU", "CPU_Mapped")
        ]
        seen[repack] = ", ".join(extra) or "none (plain CPU buffers)"
    if done.returncode != 0:
        seen.setdefault(True, f"exited with {done.returncode}")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--wheels", type=Path, required=True, help="holds the native llama-cpp-python wheel"
    )
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-native-") as tmp:
        workdir = Path(tmp)
        wheel = build_wheel(workdir / "dist")
        bin_dir, install_seconds = install(
            workdir / "home", args.python, args.wheels.resolve(), wheel
        )
        cpu, built = cpu_and_build(bin_dir)
        rows = []
        for repack in (False, True):
            config = workdir / f"repack-{repack}.toml"
            config.write_text(
                f'[[models]]\nname = "{EMBEDDED_MODEL_NAME}"\nbackend = "llama-cpp"\n'
                f"max_concurrency = 1\nrepack = {str(repack).lower()}\n"
            )
            with serving(bin_dir, workdir, config) as (url, log):
                chats, embeddings, rate = run_batches(url, args.prompts, args.max_tokens)
            rows.append(
                [
                    f"overnight serve, repack = {str(repack).lower()}",
                    chats,
                    embeddings,
                    rate,
                    worker_crashes(log),
                ]
            )
        repacked = repack_check(bin_dir, workdir)
    print(f"CPU: {cpu}\nllama.cpp: {built}")
    print(
        f"README install line for the extra: {install_seconds:.0f} s (llama-cpp-python from --wheels)"
    )
    print(
        table(
            f"Embedded SmolLM2-135M (q4_1), native build: {args.prompts} chats of up to {args.max_tokens} tokens, 3 embeddings",
            ["case", "chats", "embeddings", "tokens/s", "worker crashes"],
            rows,
        )
    )
    print(
        table(
            "A q4_0 copy loaded directly: weights in extra buffer types",
            ["repack", "extra buffer types used"],
            [[str(repack).lower(), repacked.get(repack, "?")] for repack in (False, True)],
        )
    )


if __name__ == "__main__":
    main()
