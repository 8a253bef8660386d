"""Throwaway test PKI made with the ``openssl`` command: a CA, a server certificate for
127.0.0.1/localhost and a client certificate, all EC P-256, valid for two days."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 2
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
EXTENSIONS = """\
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    """PEM files of one throwaway PKI (keys unencrypted)."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path, name: str = "edgespeak test") -> Pki:
    """Create a CA named ``name`` and the server and client certificates it signs, in
    ``directory`` (created if needed). Raises RuntimeError with openssl's output if it fails."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ext = directory / "extensions.cnf"
    ext.write_text(EXTENSIONS)
    pki = Pki(*(directory / f for f in (
        "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key",
    )))  # fmt: skip

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr}")

    subject = ["-subj", f"/CN={name} CA", "-config", str(ext), "-extensions", "ca"]
    run("req", "-x509", *EC_KEY, "-keyout", str(pki.ca_key), "-out", str(pki.ca),
        "-days", str(DAYS), *subject)  # fmt: skip
    signer = ["-CA", str(pki.ca), "-CAkey", str(pki.ca_key), "-CAcreateserial"]
    for cert, key, cn, section in (
        (pki.server_cert, pki.server_key, "localhost", "server"),
        (pki.client_cert, pki.client_key, "edgespeak-client", "client"),
    ):
        csr = directory / f"{section}.csr"
        run("req", "-new", *EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
            "-config", str(ext))  # fmt: skip
        run("x509", "-req", "-in", str(csr), *signer, "-days", str(DAYS), "-out", str(cert),
            "-extfile", str(ext), "-extensions", section)  # fmt: skip
    return pki
