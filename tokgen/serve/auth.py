"""API keys in call metadata (``x-api-key: KEY`` or ``authorization: Bearer KEY``).

The key a call presented is its identity: the interceptor hands it to the servicers through
``caller()`` (a context variable of the call's task), and jobs belong to the id of the key
that submitted them (``key_id``: a keyed hash; the key itself is never stored). Operator
keys (``TOKGEN_OPERATOR_API_KEYS``, ``--operator-keys-file``) are keys too, and see every
tenant's jobs. Without keys every call is one anonymous caller.

Keys are compared in constant time (``hmac.compare_digest``) against every configured key,
and never logged. Health checks stay open: orchestrators probe them without credentials.
The key is checked before the request is parsed: a call without a valid key gets
UNAUTHENTICATED whatever its bytes, and they are not decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import grpc

from tokgen.errors import TokgenError
from tokgen.serve.interceptors import wrapped

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


@dataclass(frozen=True)
class Caller:
    """Who makes the current call: the valid API key it presented (None: the server has
    no keys, every call is the anonymous caller) and whether it is an operator's."""

    key: bytes | None = None
    operator: bool = False


ANONYMOUS_CALLER = Caller()
_CALLER: ContextVar[Caller | None] = ContextVar("tokgen_caller", default=None)


def caller() -> Caller:
    """The caller of the call being served (set by ``ApiKeyInterceptor``, per call)."""
    return _CALLER.get() or ANONYMOUS_CALLER


def key_id(salt: bytes, key: bytes) -> str:
    """The id jobs record as their owner: HMAC-SHA256 of the key under a per-deployment
    secret, 128 bits in hex. Stable for a key, and says nothing usable about it."""
    return hmac.new(salt, key, hashlib.sha256).hexdigest()[:32]


def presented_key(metadata: tuple | None) -> bytes | None:
    for name, value in metadata or ():
        if name == "x-api-key":
            return value.encode() if isinstance(value, str) else value
        if name == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].encode()
    return None


def matching_key(presented: bytes | None, keys: list[bytes]) -> int | None:
    """The index of the key ``presented`` is, if any. Compares against every key (no early
    exit), so timing says nothing about which matched."""
    results = [hmac.compare_digest(presented or b"", k) for k in keys]
    return next((i for i, r in enumerate(results) if r), None) if presented is not None else None


def key_is_valid(presented: bytes | None, keys: list[bytes]) -> bool:
    return matching_key(presented, keys) is not None


def identify(presented: bytes | None, keys: list[bytes], first_operator: int) -> Caller | None:
    """The caller a presented key makes, or None if it is no key of ``keys`` (those from
    index ``first_operator`` on are operators'). Every transport identifies callers so."""
    index = matching_key(presented, keys)
    return None if index is None else Caller(keys[index], operator=index >= first_operator)


def act_as(identity: Caller) -> None:
    """Make ``identity`` the caller of the current task (and of the tasks it starts): for a
    transport without interceptors (HTTP), which identifies each request itself."""
    _CALLER.set(identity)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: list[bytes], operator_keys: list[bytes] | None = None):
        self.keys = [*keys, *(operator_keys or [])]
        self.operators = len(keys)  # keys from this index on are operators'

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        identity = identify(presented_key(details.invocation_metadata), self.keys, self.operators)
        if identity is not None:

            @asynccontextmanager
            async def as_caller(request, context):
                # The call runs in a task of its own: the value stays with this call.
                _CALLER.set(identity)
                yield

            return wrapped(handler, as_caller)

        return denied(handler)


DENIED = "missing or invalid API key (x-api-key)"


def denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler that refuses the call before reading its request: declared as taking a
    request stream (the bytes on the wire are the same), so grpc hands it the call at
    once instead of first receiving a unary request whole (up to --max-request-bytes);
    the request is never received, buffered or parsed, whatever its size or bytes."""

    async def deny_unary(requests, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)

    async def deny_stream(requests, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
        yield  # pragma: no cover (abort raises): makes this an async generator

    serialize = handler.response_serializer
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, unparsed, serialize)
    return grpc.stream_unary_rpc_method_handler(deny_unary, unparsed, serialize)


def unparsed(data: bytes) -> None:
    """The deserializer of a call refused for its key: its bytes are never read."""
    return None
