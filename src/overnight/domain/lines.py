"""One input line: what makes it valid, and what it holds once it is.

`check_line` is the one rule. Validation runs it on every line of a file,
and execution and finalisation run it again when they re-read a chunk, so a
line that passed validation is read identically when it runs: a line can
never be accepted by one and dropped by the other. Pure code: bytes in, a
value out.

The rule, in full:
- the line is JSON that msgspec decodes strictly into the line's shape
  (`custom_id`, `method`, `url`, `body`): valid UTF-8 throughout, numbers
  within a double's range, integers of at most 4,300 digits; other
  top-level fields are skipped unread (they are never sent anywhere);
- it nests at most `MAX_NESTING` levels deep, checked before decoding, so
  the limit does not move with the caller's stack as the decoder's own
  recursion guard does (that guard counts Python frames too; 128 levels
  leave the runner's stacks, a few dozen frames deep, ample room);
- its fields satisfy `LineRules`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

MAX_CUSTOM_ID_LENGTH = 512
#: The longest `custom_id` any configuration may allow (the setting's bound).
CUSTOM_ID_LENGTH_CEILING = 65536
#: Deepest nesting of arrays and objects a line may have, the line itself
#: counting as one level. serde_json (behind several model servers) stops
#: at 128 as well.
MAX_NESTING = 128


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem with one line of an input file. Line numbers start at 1."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


class Request(msgspec.Struct, frozen=True):
    """A valid line: the request to send and the id that joins its result.

    A msgspec struct, not a frozen dataclass: validation makes one per line,
    and a frozen dataclass's `__init__` costs twenty times as much."""

    custom_id: str
    model: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineRules:
    """What a line must satisfy for one batch."""

    endpoint: str
    #: Names of the configured models; None accepts any model (used when
    #: re-reading lines that were already validated).
    models: Collection[str] | None = None
    #: OpenAI lines must carry `method` and `url`; Together lines may omit
    #: them and take them from the batch.
    require_method_and_url: bool = True
    max_custom_id_length: int = MAX_CUSTOM_ID_LENGTH
    #: Longest line in bytes (newline excluded); None: no limit (re-reading).
    max_line_bytes: int | None = None
    #: Decodes a line whose known fields already meet these rules (made
    #: once per rules: see `_valid_line_decoder`).
    decode_valid: Callable[[bytes], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        decoder = _valid_line_decoder(
            self.endpoint, self.max_custom_id_length, self.require_method_and_url
        )
        object.__setattr__(self, "decode_valid", decoder)

    @classmethod
    def rereading(cls, endpoint: str) -> LineRules:
        """The rules for re-reading a validated file: they accept every line
        that any batch's rules accepted (any model, `method` and `url`
        optional, any `custom_id` length a configuration may allow, no line
        limit), so a line never passes validation and fails on re-reading."""
        return cls(
            endpoint,
            models=None,
            require_method_and_url=False,
            max_custom_id_length=CUSTOM_ID_LENGTH_CEILING,
        )


@functools.lru_cache(maxsize=64)
def _valid_line_decoder(
    endpoint: str, max_custom_id_length: int, require_method_and_url: bool
) -> Callable[[bytes], Any]:
    """A msgspec decoder that accepts only lines whose `custom_id`,
    `method`, `url` and `body` meet the rules, checked in C while decoding:
    most of what makes a line valid costs nothing beyond the decode. Made
    once per set of rules (every chunk run builds its rules anew)."""
    method: Any = Literal["POST"]
    url: Any = Literal[endpoint]
    fields: list[Any] = [
        ("custom_id", Annotated[str, msgspec.Meta(min_length=1, max_length=max_custom_id_length)]),
        ("body", dict[str, Any]),
    ]
    if require_method_and_url:
        fields += [("method", method), ("url", url)]
    else:
        fields += [("method", method | None, None), ("url", url | None, None)]
    return msgspec.json.Decoder(msgspec.defstruct("ValidLine", fields)).decode


def is_blank(raw: bytes) -> bool:
    """Blank lines (and a trailing newline at the end of a file) are skipped."""
    return not raw.strip()


def strip_bom(raw: bytes, line: int) -> bytes:
    """Drop a UTF-8 byte-order mark at the start of the file."""
    return raw[3:] if line == 1 and raw.startswith(b"\xef\xbb\xbf") else raw


class _Line(msgspec.Struct):
    """A line's shape, any field of any type: the loose decode that names
    what is wrong with a line the rules' decoder refused. The body is still
    decoded whole, so a line it passes holds only values that can be sent."""

    custom_id: Any = None
    body: Any = None
    method: Any = None
    url: Any = None


_decode_line = msgspec.json.Decoder(_Line).decode
_decode_any = msgspec.json.Decoder().decode

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


@functools.cache
def _bracket_steps() -> Any:
    """Each byte's step in depth."""
    import numpy as np

    steps = np.zeros(256, dtype=np.int32)
    steps[list(b"[{")] = 1
    steps[list(b"]}")] = -1
    return steps


def nesting_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw` (JSON text), strings'
    contents not counted. Linear in C: no recursion, whatever the depth.
    numpy is imported here, only for a line with enough brackets to be too
    deep (`too_deep`): its import is about 0.13 s of every process's start,
    for lines that hardly any batch has."""
    import numpy as np

    bare = _STRING.sub(b"", raw)
    return int(np.cumsum(_bracket_steps()[np.frombuffer(bare, dtype=np.uint8)]).max(initial=0))


def too_deep(raw: bytes) -> bool:
    """Whether `raw` nests deeper than `MAX_NESTING`. Almost every line is
    too short to, or has fewer brackets than that in all, which two C-level
    counts show; only the rest is measured."""
    return (
        len(raw) > _DEEP_LINE
        and raw.count(b"[") + raw.count(b"{") > MAX_NESTING
        and nesting_depth(raw) > MAX_NESTING
    )


#: The shortest line that can nest deeper than `MAX_NESTING`.
_DEEP_LINE = 2 * (MAX_NESTING + 1) - 1


def check_line(raw: bytes, line: int, rules: LineRules) -> Request | LineError:
    """Check one line (without its newline), physical line `line` of the
    file (from 1). Never raises. The length limit counts every byte of the
    line as stored, a byte-order mark included."""
    if rules.max_line_bytes is not None and len(raw) > rules.max_line_bytes:
        return LineError(
            "line_too_long",
            f"Line {line} is longer than the limit of {rules.max_line_bytes} bytes.",
            line,
        )
    if line == 1:
        raw = strip_bom(raw, line)
    if too_deep(raw):
        return LineError(
            "invalid_json_line",
            f"Line {line} nests arrays or objects more than {MAX_NESTING} levels deep.",
            line,
        )
    try:
        valid = rules.decode_valid(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _check_precisely(raw, line, rules)
    # What the decoder could not check: the model, and streaming. This runs
    # for every line of every file, so it is one expression; anything it
    # does not pass goes to `check_fields`, which accepts nothing more (a
    # property test holds the two together) and names what is wrong.
    body = valid.body
    if (
        type(model := body.get("model")) is str
        and model
        and (rules.models is None or model in rules.models)
        and body.get("stream") is not True
    ):
        return Request(valid.custom_id, model, body)
    return check_fields(valid.custom_id, valid.method, valid.url, body, line, rules)


def _check_precisely(raw: bytes, line: int, rules: LineRules) -> Request | LineError:
    """A line the rules' decoder refused: decode it loosely to name what
    is wrong (or why it is not JSON at all)."""
    try:
        value = _decode_line(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _why_not_json(raw, line)
    return check_fields(value.custom_id, value.method, value.url, value.body, line, rules)


def _why_not_json(raw: bytes, line: int) -> LineError:
    """The error for a line the decoder refused, with the reason named."""
    try:
        _decode_any(raw)
    except msgspec.ValidationError as exc:  # numbers out of range
        reason = str(exc).split(" - ")[0].lower()
    except UnicodeDecodeError:  # msgspec before 0.23
        reason = "invalid UTF-8"
    except msgspec.DecodeError as exc:
        reason = "invalid UTF-8" if "UTF-8" in str(exc) else "invalid JSON"
    except RecursionError:
        reason = "nested too deeply"
    else:
        reason = "not a JSON object"
    return LineError("invalid_json_line", f"Line {line} is not valid JSON ({reason}).", line)


def check_fields(
    custom_id: Any, method: Any, url: Any, body: Any, line: int, rules: LineRules
) -> Request | LineError:
    if custom_id is None:
        return _missing("custom_id", line)
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "invalid_request",
            f"Line {line}: custom_id must be a non-empty string.",
            line,
            "custom_id",
        )
    if len(custom_id) > rules.max_custom_id_length:
        return LineError(
            "custom_id_too_long",
            f"Line {line}: custom_id is longer than {rules.max_custom_id_length} characters.",
            line,
            "custom_id",
        )

    if method is None:
        if rules.require_method_and_url:
            return _missing("method", line)
    elif method != "POST":
        return LineError(
            "invalid_method",
            f"Line {line}: method must be 'POST', not {_show(method)}.",
            line,
            "method",
        )

    if url is None:
        if rules.require_method_and_url:
            return _missing("url", line)
    elif url != rules.endpoint:
        return LineError(
            "invalid_url",
            f"Line {line}: url {_show(url)} does not match the batch endpoint {rules.endpoint!r}.",
            line,
            "url",
        )

    if body is None:
        return _missing("body", line)
    if not isinstance(body, dict):
        return LineError(
            "invalid_request", f"Line {line}: body must be a JSON object.", line, "body"
        )

    model = body.get("model")
    if model is None:
        return _missing("body.model", line)
    if not isinstance(model, str) or not model:
        return LineError(
            "invalid_request",
            f"Line {line}: body.model must be a non-empty string.",
            line,
            "body.model",
        )
    if rules.models is not None and model not in rules.models:
        return LineError(
            "model_not_found",
            f"Line {line}: the model {model!r} is not served here; served: {_names(rules.models)}.",
            line,
            "body.model",
        )
    if body.get("stream") is True:
        return LineError(
            "streaming_unsupported",
            f"Line {line}: streaming is not supported in batches; remove body.stream.",
            line,
            "body.stream",
        )
    return Request(custom_id, model, body)


def _missing(param: str, line: int) -> LineError:
    return LineError(
        "missing_required_parameter",
        f"Line {line} is missing the required parameter {param!r}.",
        line,
        param,
    )


def _names(models: Collection[str]) -> str:
    shown = sorted(models)[:10]
    return ", ".join(shown) + (", ..." if len(models) > len(shown) else "")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line of a chunk that fails `check_line` when re-read. Validation
    ran the same rule over the same bytes, so this cannot happen unless the
    stored input changed; if it does, the line still reaches the error file
    (under `custom_id`, as far as it can be read) instead of vanishing."""

    custom_id: str
    error: LineError


class _CustomIdOnly(msgspec.Struct):
    custom_id: str


_decode_custom_id = msgspec.json.Decoder(_CustomIdOnly).decode


def read_requests(
    raws: Iterable[bytes], first_line: int, rules: LineRules
) -> Iterator[Request | Unreadable]:
    """Every non-blank line of a run of physical lines (without newlines)
    that starts at line `first_line`, checked by the one rule: the chunk
    reader of execution and finalisation."""
    for number, raw in enumerate(raws, first_line):
        if is_blank(strip_bom(raw, number)):
            continue
        checked = check_line(raw, number, rules)
        if isinstance(checked, Request):
            yield checked
        else:
            yield Unreadable(_custom_id_of(raw, number), checked)


def _custom_id_of(raw: bytes, line: int) -> str:
    try:
        return _decode_custom_id(strip_bom(raw, line)).custom_id or f"line-{line}"
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return f"line-{line}"
