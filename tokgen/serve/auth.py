"""API keys in call metadata (``x-api-key: KEY`` or ``authorization: Bearer KEY``).

Keys are compared in constant time (``hmac.compare_digest``) against every configured key,
and never logged. Health checks stay open: orchestrators probe them without credentials.
The key is checked before the request is parsed: a call without a valid key gets
UNAUTHENTICATED whatever its bytes, and they are not decoded.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

import grpc

from tokgen.errors import TokgenError
from tokgen.serve.interceptors import guarded

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def load_api_keys(path: str | Path | None = None, env: str = "TOKGEN_API_KEYS") -> list[bytes]:
    """Keys from a file (one per line, # comments) and/or the env var (comma-separated)."""
    keys = [k.strip() for k in os.environ.get(env, "").split(",")]
    if path is not None:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise TokgenError(f"cannot read API keys file {path}: {exc.strerror}") from None
        keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
    keys = [k for k in keys if k]
    if any(len(k) < 16 for k in keys):
        raise TokgenError("API keys must be at least 16 characters long")
    return [k.encode() for k in keys]


def presented_key(metadata: tuple | None) -> bytes | None:
    for name, value in metadata or ():
        if name == "x-api-key":
            return value.encode() if isinstance(value, str) else value
        if name == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].encode()
    return None


def key_is_valid(presented: bytes | None, keys: list[bytes]) -> bool:
    # Compare against every key (no early exit), so timing says nothing about which matched.
    results = [hmac.compare_digest(presented or b"", k) for k in keys]
    return presented is not None and any(results)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: list[bytes]):
        self.keys = keys

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        if key_is_valid(presented_key(details.invocation_metadata), self.keys):
            return handler

        async def deny(request, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key (x-api-key)")

        # Refused before its bytes are parsed: no protobuf decoding, however large or
        # malformed, for a caller without a key (grpc has still received the message).
        return guarded(handler, deny, deserialize=unparsed)


def unparsed(data: bytes) -> None:
    """The deserializer of a call refused for its key: its bytes are never read."""
    return None
