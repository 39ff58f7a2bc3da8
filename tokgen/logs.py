"""How tokgen logs: the standard ``logging`` module, set up once by the command line.

Modules only ever ``logging.getLogger(__name__)`` and log; ``configure`` (called by
``tokgen.cli`` before a command runs, never at import time, so that the Python API and the
tests keep their own logging) decides where the records go and how they look:

- one handler, on stderr (stdout is for the commands' JSON), at ``--log-level``;
- ``text`` (a line per record, for people) or ``json`` (one JSON object per line, for log
  shippers: Loki, Cloud Logging, Elasticsearch);
- the request id of the call being served (``REQUEST_ID``, set by the access log in
  ``tokgen.serve.access_log``) on every record logged while serving it, so a warning can be
  traced back to its access-log line;
- passwords in URLs (a Redis URL in an error message) replaced by ``***`` in every record,
  tracebacks included: logs are read by more people than the secrets are meant for;
- the chatty third-party loggers (vLLM, httpx, uvicorn) held at WARNING unless the level
  is debug: at info the log is tokgen's own lines, mostly one per request. vLLM keeps its
  own handler and format (its engine processes log on their own): only its level is set.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import get_args

from tokgen.settings import LogFormat, LogLevel, redact_url

# The choices, as settings.py defines them, and the logging module's numbers for the levels.
LEVELS: dict[str, int] = {name: logging.getLevelName(name.upper()) for name in get_args(LogLevel)}
FORMATS: tuple[str, ...] = get_args(LogFormat)

# Third-party loggers that talk at INFO about every request or model load (httpx: each
# HTTP request; uvicorn: its own access log and start-up lines, replaced by tokgen's
# access log; vLLM: engine start-up). Held at WARNING unless the level is debug.
NOISY_LOGGERS = (
    "vllm",
    "httpx",
    "httpx2",
    "httpcore",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "urllib3",
)

# vLLM's level for each of ours: its start-up INFO lines only at debug.
VLLM_LEVELS = {"debug": "INFO", "info": "WARNING", "warning": "WARNING", "error": "ERROR"}

# The request id of the call being served, set per call by the access log (every gRPC
# call and HTTP request runs in a task of its own, so the value is that call's).
REQUEST_ID: ContextVar[str | None] = ContextVar("tokgen_request_id", default=None)

# Anything that looks like a URL: ``redact_url`` decides whether it holds a password.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")

_handler: logging.Handler | None = None  # the one ``configure`` installed (replaced on reconfigure)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when the record comes, not the one it was at
    configuration (pytest and other harnesses swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _with_request_id(record: logging.LogRecord) -> bool:
    """A handler filter: the current request id onto the record (None outside a call)."""
    if not hasattr(record, "request_id"):
        record.request_id = REQUEST_ID.get()
    return True


class TextFormatter(logging.Formatter):
    """``2025-01-02 10:11:12,345 INFO tokgen.access: grpc ... request_id=...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            head, newline, rest = text.partition("\n")  # after the message, before a traceback
            text = f"{head} request_id={request_id}{newline}{rest}"
        return redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``request_id`` inside a call, the record's ``fields`` (the access log's
    method, status, duration...) and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if request_id := getattr(record, "request_id", None):
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if key not in entry})
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure(level: LogLevel = "info", fmt: LogFormat = "text") -> None:
    """Send every record at ``level`` or above to stderr, formatted as ``fmt``. Calling it
    again replaces what an earlier call set up (``tokgen.cli.main`` may run more than once in
    one process: the tests do), and leaves other handlers (pytest's) alone."""
    global _handler
    numeric = LEVELS[level]
    # vLLM logs through a handler and format of its own, set up when it is imported, also
    # in the engine processes it starts (which never run this): its level is what can be
    # set, through its variable, before the import (a VLLM_LOGGING_LEVEL given wins).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", VLLM_LEVELS[level])
    if fmt == "json":  # stderr is JSON lines only: no progress bars from model loading
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_with_request_id)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:  # ours, however it got there
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)  # Python warnings (torch's, say) as records, in the same format


def json_lines() -> bool:
    """Whether ``configure`` chose JSON lines (then nothing else should print to stderr)."""
    return _handler is not None and isinstance(_handler.formatter, JsonFormatter)
