"""A throw-away certificate authority for the TLS tests, made with the openssl command line."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SERVER_EXTENSIONS = """\
subjectAltName = IP:127.0.0.1, DNS:localhost
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
"""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate, and a server certificate for 127.0.0.1 signed by it with its key (PKCS#8)."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is not on PATH: apt-get install openssl (make system-deps does)"
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, *, name: str = "callpulse test CA") -> TlsFiles:
    """Create a self-signed CA and a server certificate for 127.0.0.1 and localhost, valid two days."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text(_SERVER_EXTENSIONS, encoding="utf-8")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=directory)  # fmt: skip
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
