"""Docs move with the code: every setting is documented, and the webhook
verification snippet a reader copies verifies a real signature."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from overnight.settings import ModelSettings, Settings, TenantSettings, WebhookSettings
from overnight.webhooks.signing import headers, new_secret

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


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on this machine")
def test_the_node_snippet_in_webhooks_md_verifies_a_signed_delivery(tmp_path: Path) -> None:
    snippet = re.search(r"```js\n(.*?)```", (DOCS / "webhooks.md").read_text(), re.S)
    assert snippet is not None
    old, new = new_secret(), new_secret()
    body = b'{"id":"evt_1","object":"event","type":"batch.completed","data":{"id":"batch_1"}}'
    sent = headers([new, old], "evt_1", int(time.time()), body)
    checks = f"""
const headers = {json.dumps(sent)};
const body = Buffer.from({json.dumps(body.decode())});
for (const secret of {json.dumps([old, new])}) console.log(verify(secret, body, headers).data.id);
for (const [secret, raw] of [[{json.dumps(new_secret())}, body],
                             [{json.dumps(new)}, Buffer.from(body.toString() + " ")]]) {{
  try {{ verify(secret, raw, headers); console.log("accepted"); }}
  catch (e) {{ console.log("refused"); }}
}}
"""
    script = tmp_path / "verify.js"
    script.write_text(snippet.group(1) + checks)
    ran = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30)
    assert ran.stdout.split() == ["batch_1", "batch_1", "refused", "refused"], ran.stderr
