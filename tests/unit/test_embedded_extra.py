"""The embedded engine is an extra: a process that would run a model it
cannot run here says so in one line, before it starts, and says what to
install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from overnight.backends.availability import why_models_cannot_run
from overnight.cli import app
from overnight.settings import ModelSettings, Settings

INSTALL = "pip install 'overnight[embedded]'"


@pytest.fixture
def without_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if llama-cpp-python were not installed: `import llama_cpp` fails."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)


@pytest.fixture(autouse=True)
def _no_outside_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OVERNIGHT_CONFIG", "OVERNIGHT_MODELS", "OVERNIGHT_WORKER"):
        monkeypatch.delenv(name, raising=False)


def serve(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data"), *args])
    return result.exit_code, result.output.strip().splitlines()


@pytest.mark.usefixtures("without_the_engine")
def test_serve_with_no_models_and_no_engine_says_how_to_get_one(tmp_path: Path) -> None:
    code, lines = serve(tmp_path)
    assert code == 2
    assert lines == [
        "error: no models to serve: configure a model server under [[models]] in a config "
        f"file (docs/configuration.md), or install the embedded model: {INSTALL}"
    ]
    assert not (tmp_path / "data").exists()  # refused before anything was made


@pytest.mark.usefixtures("without_the_engine")
def test_a_configured_embedded_model_without_the_engine_is_named(tmp_path: Path) -> None:
    config = tmp_path / "overnight.toml"
    config.write_text('[[models]]\nname = "tiny"\nbackend = "llama-cpp"\n')
    code, lines = serve(tmp_path, "--config", str(config))
    assert code == 2
    assert lines == [f"error: model 'tiny': the embedded engine is not installed: {INSTALL}"]


@pytest.mark.usefixtures("without_the_engine")
@pytest.mark.parametrize("command", ["worker", "run"])
def test_the_other_commands_that_run_models_refuse_the_same_way(
    command: str, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("")
    args = {
        "worker": ["worker", "--data-dir", str(tmp_path / "data")],
        "run": ["run", str(source), "-o", str(tmp_path / "out.jsonl")],
    }[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith("error: no models to serve: ")


@pytest.mark.usefixtures("without_the_engine")
def test_models_behind_a_server_need_no_engine() -> None:
    settings = Settings(models=[ModelSettings(name="m", base_url="http://127.0.0.1:9/v1")])
    assert why_models_cannot_run(settings) is None


def test_an_embedded_model_whose_file_is_missing_is_named(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the engine is installed only in the main venv")
    missing = tmp_path / "nowhere.gguf"
    settings = Settings(models=[ModelSettings(name="tiny", backend="llama-cpp", path=missing)])
    assert why_models_cannot_run(settings) == f"model 'tiny': no model file at {missing}"


@pytest.mark.embedded
@pytest.mark.parametrize("repack", [False, True])
def test_the_model_loads_with_extra_buffer_types_only_when_asked(repack: bool) -> None:
    """Off by default: on AMX CPUs llama.cpp's q4_1 repack path crashes.
    The library's own default is left as it was."""
    low = pytest.importorskip("llama_cpp.llama_cpp")
    from overnight.backends.llamacpp import load_llama
    from overnight.settings import bundled_gguf_path

    model = load_llama(repack=repack, model_path=str(bundled_gguf_path()), verbose=False)
    try:
        assert model.model_params.use_extra_bufts is repack
        assert model.tokenize(b"hello")  # it loaded and works
    finally:
        model.close()
    assert low.llama_model_default_params().use_extra_bufts is True
    assert ModelSettings(name="m", backend="llama-cpp").repack is False


def test_an_embedded_model_decodes_sixteen_requests_together_unless_told() -> None:
    """`max_concurrency` is the engine's sequences in flight: 16 by default,
    with no adaptive limit (there is no server to signal congestion)."""
    default = ModelSettings(name="m", backend="llama-cpp")
    assert (default.max_concurrency, default.adaptive) == (16, False)
    assert default.context_pool == 2 * default.n_ctx
    chosen = ModelSettings(
        name="m", backend="llama-cpp", max_concurrency=3, adaptive=True, kv_cache_tokens=9000
    )
    assert (chosen.max_concurrency, chosen.adaptive, chosen.context_pool) == (3, True, 9000)
    assert ModelSettings(name="m", base_url="http://h/v1").max_concurrency == 64
    with pytest.raises(ValueError, match="at most 256 requests at once"):
        ModelSettings(name="m", backend="llama-cpp", max_concurrency=300)
    with pytest.raises(ValueError, match="must hold one whole context"):
        ModelSettings(name="m", backend="llama-cpp", n_ctx=4096, kv_cache_tokens=2048)
