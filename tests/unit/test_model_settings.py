"""A model server's address is checked when the config is read, not on the
first request of the first batch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from overnight.settings import ModelSettings


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:8000/v1", "is not an http:// or https:// URL"),
        ("ftp://models/v1", "is not an http:// or https:// URL"),
        ("http:///v1", "names no host"),
        ("http://gpu-1:99999/v1", "has an invalid port"),
        ("https://example.openai.azure.com/v1?api-version=1", "has a query or fragment"),
    ],
)
def test_an_unusable_base_url_is_refused_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelSettings(name="m", base_urls=["http://ok:8000/v1", url])
    assert f"model 'm': {url!r} {problem}" in str(refused.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://[::1]:8000/v1", "https://api.example.com/v1/"]
)
def test_usable_base_urls_are_taken(url: str) -> None:
    assert ModelSettings(name="m", base_url=url).urls == [url.rstrip("/")]
