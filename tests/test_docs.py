"""Docs move with the code: every setting is documented."""

from __future__ import annotations

from pathlib import Path

from overnight.settings import ModelSettings, Settings, TenantSettings, WebhookSettings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `{name}` |" not in text]
    assert missing == []


def test_every_model_field_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in ModelSettings.model_fields if f"| `{name}` |" not in text]
    assert missing == []


def test_every_tenant_field_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in TenantSettings.model_fields if f"- `{name}`:" not in text]
    assert missing == []


def test_every_webhook_field_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in WebhookSettings.model_fields if f"- `{name}`:" not in text]
    assert missing == []


def test_every_documented_setting_exists() -> None:
    text = (DOCS / "configuration.md").read_text()
    known = set(Settings.model_fields) | set(ModelSettings.model_fields)
    documented = {
        line.split("`")[1]
        for line in text.splitlines()
        if line.startswith("| `") and line.count("`") >= 2
    }
    assert documented - known == set()
