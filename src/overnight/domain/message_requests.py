"""One request of an Anthropic Message Batch create: what makes it valid,
and the input line it becomes.

The create body is `{"requests": [{"custom_id", "params"}, ...]}`. The
API parses it as a stream and hands each request here as it comes;
`RequestChecker.check` checks it (its `custom_id` against Anthropic's
pattern and every earlier one, `params`' types, the model) and returns it
as a line of the core's input format, `{"custom_id", "method", "url":
"/v1/messages", "body": params}`. The line then passes the one line rule
(`check_line`) as well, so a request accepted here is a line validation
accepts. A problem raises `BadRequest`, naming where: `requests[3].params.max_tokens`.

Only the fields whose types are known are checked (`params` may carry
others: a server that speaks /v1/messages judges them, and translation
refuses what it cannot carry, per request).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Any, Literal

import msgspec

from overnight.domain.lines import MAX_CUSTOM_ID_LENGTH, LineError, LineRules, check_line

ENDPOINT = "/v1/messages"
#: Anthropic's pattern for a `custom_id`.
CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class BadRequest(ValueError):
    """A request the create cannot take; `param` names where."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class _Block(msgspec.Struct):
    type: str


class _Message(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _ToolChoice(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]


class _Params(msgspec.Struct):
    """The Messages fields whose types are checked at create."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    system: str | list[_Block] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0)] | None = None
    stream: bool | None = None
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: _ToolChoice | None = None


class _Line(msgspec.Struct):
    custom_id: Annotated[str, msgspec.Meta(pattern=CUSTOM_ID_PATTERN)]
    body: _Params


_decode_line = msgspec.json.Decoder(_Line).decode
#: Numbers come from the streaming parser as Decimals (exactly as written):
#: they are written back as numbers, never rounded through a float.
_encode = msgspec.json.Encoder(decimal_format="number").encode
#: "... - at `$.body.messages[0].role`" -> "body.messages[0].role".
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _params_path(path: str) -> str:
    """A path into the line (`body.max_tokens`) as a path into the request
    (`params.max_tokens`)."""
    if path == "body" or path.startswith(("body.", "body[")):
        return "params" + path.removeprefix("body")
    return path


class RequestChecker:
    """Checks the requests of one create, in order, and remembers their
    `custom_id`s to refuse a repeat."""

    def __init__(
        self,
        *,
        models: Collection[str],
        max_line_bytes: int,
        max_custom_id_length: int = MAX_CUSTOM_ID_LENGTH,
        single_model: bool = False,
    ) -> None:
        """The settings validation will apply (`max_line_bytes`,
        `max_custom_id_length`, `require_single_model`) are applied here
        too, so a batch never fails validation after its create passed."""
        self.models = models
        self.rules = LineRules(
            ENDPOINT,
            models=models,
            require_method_and_url=True,
            max_custom_id_length=max_custom_id_length,
            max_line_bytes=max_line_bytes,
        )
        self.single_model = single_model
        self.count = 0
        self._seen: set[str] = set()
        self._model: str | None = None

    def check(self, item: Any) -> bytes:
        """The next request as an input line, newline included."""
        index = self.count
        where = f"requests[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(where, "must be an object with custom_id and params.")
        for key in item:
            if key not in ("custom_id", "params"):
                raise BadRequest(f"{where}.{key}", "Extra inputs are not permitted.")
        custom_id, params = item.get("custom_id"), item.get("params")
        if custom_id is None:
            raise BadRequest(f"{where}.custom_id", "Field required.")
        if params is None:
            raise BadRequest(f"{where}.params", "Field required.")
        if not isinstance(params, dict):
            raise BadRequest(f"{where}.params", "must be an object.")
        raw = self._encoded(where, custom_id, params)
        line = self._decoded(where, raw)
        body = line.body
        if body.stream:
            raise BadRequest(f"{where}.params.stream", "batches do not stream; remove it.")
        if body.model not in self.models:
            served = ", ".join(sorted(self.models)[:10])
            raise BadRequest(
                f"{where}.params.model",
                f"the model {body.model!r} is not served here; served: {served}.",
            )
        if self.single_model and self._model not in (None, body.model):
            raise BadRequest(
                f"{where}.params.model",
                f"every request must name the same model ({self._model!r}) here.",
            )
        self._model = body.model
        checked = check_line(raw, index + 1, self.rules)
        if isinstance(checked, LineError):
            param = where
            if checked.param:
                param += "." + _params_path(checked.param)
            raise BadRequest(param, checked.message.replace(f"Line {index + 1}", "the request"))
        if line.custom_id in self._seen:
            raise BadRequest(
                f"{where}.custom_id",
                f"{line.custom_id!r} is used by an earlier request; custom_id must be unique.",
            )
        self._seen.add(line.custom_id)
        self.count += 1
        return raw + b"\n"

    def _encoded(self, where: str, custom_id: Any, params: dict[str, Any]) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": params}
        try:
            return _encode(line)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            # Text that is not valid Unicode (a lone surrogate), or nesting
            # past what can be written.
            raise BadRequest(where, f"cannot be stored: {exc}.") from None

    def _decoded(self, where: str, raw: bytes) -> _Line:
        try:
            return _decode_line(raw)
        except msgspec.ValidationError as exc:
            message = str(exc)
            found = _AT.search(message)
            path = found.group("path") if found else ""
            missing = _MISSING.match(message)
            if missing:
                path = f"{path}.{missing.group('field')}" if path else missing.group("field")
            param = f"{where}.{_params_path(path)}" if path else where
            raise BadRequest(param, _AT.sub("", message) + ".") from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise BadRequest(where, f"cannot be read back: {exc}.") from None
