"""The CA bundle loaded on demand (dorch.discord.tls): TLS still verifies, against the same trust.

Real certificates made with the openssl CLI, a real HTTPS server on 127.0.0.1 and a fresh Python
process per case, since the trick happens when aiohttp is first imported.
"""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHILD = r"""
import asyncio, json, os, sys
import dorch.discord.client  # imports aiohttp the way dorch does
import aiohttp
from aiohttp import connector

async def fetch(url):
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(url) as response:
                return str(response.status)
        except aiohttp.ClientConnectorCertificateError:
            return "untrusted"

async def main():
    return [await fetch(url) for url in sys.argv[1:]]

eager_cas = connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"]  # before any handshake
print(json.dumps({"results": asyncio.run(main()), "eager_cas": eager_cas,
                  "ssl_cert_file": os.environ.get("SSL_CERT_FILE")}))
"""


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(tmp: Path, name: str) -> tuple[Path, Path]:
    """A CA and a certificate it signed for 127.0.0.1: (ca.pem, server.pem with its key)."""
    ca, ca_key, csr, leaf, key = (tmp / f"{name}-{part}" for part in
                                  ("ca.pem", "ca.key", "server.csr", "server.crt", "server.key"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
            "-keyout", ca_key, "-out", ca)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    ext = tmp / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", ext, "-out", leaf)
    combined = tmp / f"{name}-server.pem"
    combined.write_text(leaf.read_text() + key.read_text())
    return ca, combined


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Two HTTPS servers: one signed by a CA in a hashed CA directory, one by a CA nobody trusts."""
    tmp = tmp_path_factory.mktemp("pki")
    trusted_ca, trusted_cert = make_ca(tmp, "trusted")
    _, stranger_cert = make_ca(tmp, "stranger")
    cadir = tmp / "cadir"
    cadir.mkdir()
    (cadir / "trusted.pem").write_text(trusted_ca.read_text())
    openssl("rehash", cadir)
    servers, urls = [], {}
    for name, cert in (("trusted", trusted_cert), ("stranger", stranger_cert)):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        urls[name] = f"https://127.0.0.1:{server.server_address[1]}/"
    yield {"cadir": cadir, "trusted_ca": trusted_ca, "empty": tmp, **urls}
    for server in servers:
        server.shutdown()


def child(pki: dict[str, object], **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT_")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(pki["trusted"]), str(pki["stranger"])],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_hashed_ca_directory_is_searched_on_demand_and_still_verifies(pki: dict[str, object]) -> None:
    seen = child(pki, SSL_CERT_DIR=str(pki["cadir"]))
    assert seen["results"] == ["200", "untrusted"]  # the trusted CA is found; a stranger is refused
    assert seen["eager_cas"] == 0  # nothing loaded up front
    assert seen["ssl_cert_file"] is None  # and nothing left behind for the agents dorch starts


def test_a_ca_bundle_the_user_chose_is_kept(pki: dict[str, object]) -> None:
    seen = child(pki, SSL_CERT_DIR=str(pki["cadir"]), SSL_CERT_FILE=str(pki["trusted_ca"]))
    assert seen["results"] == ["200", "untrusted"]
    assert seen["eager_cas"] == 1 and seen["ssl_cert_file"] == str(pki["trusted_ca"])


def test_without_a_hashed_directory_the_bundle_is_loaded_as_usual(pki: dict[str, object]) -> None:
    seen = child(pki, SSL_CERT_DIR=str(pki["empty"]))  # no hash links: OpenSSL's default CA file
    assert seen["results"] == ["untrusted", "untrusted"]  # the system's CAs do not know ours
    assert seen["eager_cas"] > 0  # loaded up front, as aiohttp does by itself
