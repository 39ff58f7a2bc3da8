"""Transport security (TLS, optionally mutual) and the rule for where the server may listen.

The rule: on a loopback address (only this machine can connect) the server may run with no
TLS and no API keys, which is what the two-command setup does. Any other address needs both
TLS (so keys and audio are not readable on the wire) and API keys (so only clients you gave
a key can spend the engine), unless the operator passes ``--insecure``, e.g. behind a
service mesh that terminates TLS and authenticates for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from tokgen.errors import TokgenError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and (for mTLS) the CA that signs
    client certificates; with ``client_ca`` every client must present one."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        ca = _read(self.client_ca, "TLS client CA") if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


def tls_files(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsFiles | None:
    if cert is None and key is None:
        if client_ca is not None:
            raise TokgenError("a TLS client CA needs the server's TLS certificate and key too")
        return None
    if cert is None or key is None:
        raise TokgenError("TLS needs both a certificate and a key")
    return TlsFiles(cert, key, client_ca)


def check_exposure(host: str, tls: TlsFiles | None, has_api_keys: bool, insecure: bool) -> None:
    """Refuse to listen beyond loopback without TLS and API keys, unless ``insecure``."""
    if host in LOOPBACK or insecure:
        return
    missing = [what for what, ok in (("TLS", tls is not None), ("API keys", has_api_keys)) if not ok]
    if missing:
        raise TokgenError(
            f"refusing to serve on {host} without {' and '.join(missing)}: set --tls-cert/--tls-key "
            "and --api-keys-file (or TOKGEN_API_KEYS), bind to 127.0.0.1, or pass --insecure "
            "if something in front of tokgen provides them"
        )


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TokgenError(f"cannot read {what} {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TokgenError(f"{what} {path} is not a PEM file")
    return data
