"""Import aiohttp without loading the whole CA bundle twice.

aiohttp builds two SSL contexts the moment it is imported, and each loads every certificate in
the system's CA bundle; with OpenSSL 3 that is about 55 ms of CPU together on a 2-core machine,
paid by every worker process, and a worker process starts for every task. Where the system also
keeps its CAs as a hashed directory (Debian and Ubuntu: ``/etc/ssl/certs``, kept by
update-ca-certificates from the same certificates), OpenSSL can look up only the CA a handshake
needs. So while aiohttp is imported, OpenSSL's default CA file is pointed at an empty file and the
contexts verify against the directory: the same trust, loaded on demand. A CA file the user chose
(``$SSL_CERT_FILE``) is left alone, and the environment is restored at once, so agents and any
other program dorch starts see the system's settings unchanged.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

HASHED_NAME = re.compile(r"[0-9a-f]{8}\.\d+")  # what c_rehash / openssl rehash link a CA as


def hashed_ca_dir() -> str | None:
    """The CA directory OpenSSL would search (``$SSL_CERT_DIR`` or its default), if it is hashed."""
    capath = ssl.get_default_verify_paths().capath
    try:
        names = os.listdir(capath) if capath else []
    except OSError:
        return None
    return capath if any(HASHED_NAME.fullmatch(name) for name in names) else None


@contextmanager
def ca_on_demand() -> Iterator[None]:
    """While inside: SSL contexts verify against the hashed CA directory alone, where there is one."""
    if "SSL_CERT_FILE" in os.environ or hashed_ca_dir() is None:
        yield
        return
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield
    finally:
        del os.environ["SSL_CERT_FILE"]


with ca_on_demand():
    import aiohttp  # noqa: F401  (imported here so its SSL contexts are built inside)
