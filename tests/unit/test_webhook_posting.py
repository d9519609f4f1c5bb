"""One attempt over TLS to a pinned address: the connection goes to the
address that was checked, while the TLS handshake names the endpoint's
host (SNI) and its certificate is verified against that name. A
self-signed certificate is refused, so the attempt fails and says why."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from overnight.webhooks.posting import post
from overnight.webhooks.targets import Target


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_names_the_endpoints_host_and_checks_its_certificate(tmp_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path, "receiver.test"))
    named: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: named.append(name)  # type: ignore[assignment]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        target = Target(
            url=f"https://receiver.test:{port}/hook",
            host="receiver.test",
            port=port,
            address="127.0.0.1",  # receiver.test resolves nowhere else
        )
        result = await post(target, b"{}", {}, time_limit=5)
    finally:
        server.close()
        await server.wait_closed()
    assert named == ["receiver.test"]
    assert result.status_code is None and not result.succeeded
    assert (
        result.error == "the TLS certificate of receiver.test was refused: self-signed certificate"
    )
