"""One access-log line per call, gRPC and HTTP alike, and each call's request id.

Every gRPC call (``AccessLogInterceptor``) and every HTTP request (``HttpApi``) ends with
one INFO record on the ``tokgen.access`` logger: the transport, the method (HTTP: verb and
path), the final status (the gRPC code's name, or the HTTP status), the duration, the
peer's address and the request id. Nothing else of the request: no metadata or headers
(API keys travel in them), no bodies, no query strings. uvicorn's own access log is off
(``serve/http.py``): this one replaces it, in the same shape for both transports.

The request id is the caller's ``x-request-id`` (gRPC metadata or HTTP header) when it is
a plausible id, else a fresh one, and it is sent back under the same name (gRPC: initial
metadata, sent as the call starts so that it arrives whatever the outcome; HTTP: a
response header), so a caller can quote it and an operator can find the line. While the
call runs it is ``tokgen.logs.REQUEST_ID``: every record logged for the call carries it.

Health checks and reflection (gRPC) and ``GET /healthz`` are logged at DEBUG only: probes
every few seconds would bury the API's own lines.

A client that leaves while a stream's reply is being sent makes grpc itself log an ERROR
with a traceback ("ExecuteBatchError raised in core by servicer method"): the send found
the call gone. That is the call's CANCELLED line, not a server fault, so
``quiet_client_departures`` makes it a DEBUG line without the traceback.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from urllib.parse import unquote

import grpc

from tokgen.logs import REQUEST_ID
from tokgen.serve.interceptors import UNCOUNTED_PREFIXES, final_code, wrapped

REQUEST_ID_KEY = "x-request-id"  # gRPC metadata keys and HTTP/2 header names are lower case
# What a caller's id may be: short, printable, no spaces or quotes, so it cannot forge or
# break a log line. Anything else is replaced by a fresh id.
_PLAUSIBLE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

log = logging.getLogger("tokgen.access")
GRPC_CORE_LOGGER = "grpc._cython.cygrpc"


def _client_departure(record: logging.LogRecord) -> bool:
    """A logger filter: grpc's ExecuteBatchError record (a reply sent to a call the client
    has left) becomes one DEBUG line; every other record passes unchanged."""
    error = record.exc_info[1] if record.exc_info else None
    if type(error).__name__ == "ExecuteBatchError":
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg, record.args = "%s (the client left as a reply was sent): %s", (record.getMessage(), error)
        record.exc_info = record.exc_text = None
    return True


def quiet_client_departures() -> None:
    """Install ``_client_departure`` on grpc's core logger (once; ``tokgen serve`` does)."""
    core = logging.getLogger(GRPC_CORE_LOGGER)
    if _client_departure not in core.filters:
        core.addFilter(_client_departure)


def request_id(given: str | None) -> str:
    """The caller's id when it is plausible, else a new random one (32 hex digits)."""
    if given and _PLAUSIBLE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def log_call(
    transport: str,
    method: str,
    status: str | int,
    duration_s: float,
    peer: str,
    rid: str,
    path: str | None = None,
    probe: bool = False,
) -> None:
    """The access-log record of one finished call (``probe``: at DEBUG)."""
    level = logging.DEBUG if probe else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields: dict[str, object] = {"transport": transport, "method": method}
    if path is not None:
        fields["path"] = path
    fields |= {"status": status, "duration_s": round(duration_s, 6), "peer": peer}
    what = method if path is None else f"{method} {path}"
    log.log(
        level,
        "%s %s %s %.3fs peer=%s",
        transport,
        what,
        status,
        duration_s,
        peer,
        extra={"request_id": rid, "fields": fields},
    )


def grpc_peer(peer: str) -> str:
    """A gRPC peer as HTTP's is written: ``ipv4:10.0.0.7:5555`` -> ``10.0.0.7:5555``,
    ``ipv6:%5B::1%5D:5555`` -> ``[::1]:5555`` (a unix socket's stays as it is)."""
    scheme, _, address = peer.partition(":")
    return unquote(address) if scheme in ("ipv4", "ipv6") else peer


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Logs every gRPC call as it ends and gives it its request id. The outermost
    interceptor, so that it also logs the calls the others refuse (no API key, a malformed
    request). Calls grpc refuses before any interceptor runs (an unknown method, beyond
    ``--max-concurrent-rpcs``) are not logged: they never reach a handler."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        probe = details.method.startswith(UNCOUNTED_PREFIXES)
        given = next((v for k, v in details.invocation_metadata or () if k == REQUEST_ID_KEY), None)

        @asynccontextmanager
        async def logged(request, context: grpc.aio.ServicerContext):
            rid = request_id(given if isinstance(given, str) else None)
            REQUEST_ID.set(rid)  # the call's own task: it ends with the call
            started = time.perf_counter()
            # Asked now: once the call has ended, grpc may have freed what peer() reads
            # (a segfault, not an exception).
            peer = grpc_peer(context.peer())
            error: BaseException | None = None
            try:
                await context.send_initial_metadata(((REQUEST_ID_KEY, rid),))
                # In the trailers too: a call refused at once may reach the client without
                # its initial metadata (seen under load), and abort() keeps these trailers.
                context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = final_code(context, error)
                duration = time.perf_counter() - started
                log_call("grpc", details.method, code.name, duration, peer, rid, probe=probe)

        return wrapped(handler, logged)
