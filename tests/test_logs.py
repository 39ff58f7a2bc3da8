"""Logging: ``tokgen.logs`` (levels, text and JSON lines, request ids, redaction, quiet
third-party loggers), the ``--log-level``/``--log-format`` options of every command, and
the access log of a real ``tokgen serve``: one line per gRPC call and HTTP request, the
request id sent back, no secrets; and the ``model`` label on its request series."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import sys
import time

import grpc
import httpx
import pytest

from tests.test_serve_process import start_serve, stop, tracebacks
from tokgen import logs
from tokgen.cli import build_parser
from tokgen.monitoring.metrics import model_id
from tokgen.serve.access_log import grpc_peer, request_id
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

KEY = "access-log-key-0123456789"


@pytest.fixture
def configured():
    """``logs.configure`` in this process, undone afterwards (root handlers and level, the
    third-party levels, the warnings capture, the variables it sets for vLLM and HF)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.NOISY_LOGGERS}
    environ = dict(os.environ)
    yield logs.configure
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(False)
    os.environ.clear()
    os.environ.update(environ)
    logs._handler = None


def in_a_call(rid: str, fn) -> None:
    """``fn()`` as if serving the call ``rid`` (in a context of its own, as a call's task)."""

    def run() -> None:
        logs.REQUEST_ID.set(rid)
        fn()

    contextvars.copy_context().run(run)


def test_json_lines_carry_the_request_id_and_never_a_password(configured, capsys):
    configured("info", "json")
    log = logging.getLogger("tokgen.test")
    in_a_call("req-1", lambda: log.warning("redis at %s is down", "redis://:s3cret@redis:6379/0"))
    try:
        raise ConnectionError("cannot reach rediss://user:s3cret@redis:6380")
    except ConnectionError:
        log.exception("giving up")
    log.debug("not at info")
    lines = capsys.readouterr().err.splitlines()
    warning, error = (json.loads(line) for line in lines)  # two records, each one JSON line
    assert warning["level"] == "WARNING" and warning["logger"] == "tokgen.test"
    assert warning["message"] == "redis at redis://:***@redis:6379/0 is down"
    assert warning["request_id"] == "req-1" and re.fullmatch(r"\d{4}-\d\d-\d\dT.*\+00:00", warning["time"])
    assert "request_id" not in error  # logged outside any call
    assert "Traceback" in error["exception"] and "rediss://user:***@redis:6380" in error["exception"]
    assert "s3cret" not in "".join(lines)


def test_text_lines_end_with_the_request_id(configured, capsys):
    configured("warning", "text")
    log = logging.getLogger("tokgen.test")
    in_a_call("req-2", lambda: log.warning("slow"))
    log.info("below the level")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING tokgen.test: slow request_id=req-2")


def test_third_party_chatter_is_quiet_at_info_and_heard_at_debug(configured):
    configured("info")
    for name in ("vllm", "httpx", "uvicorn.access", "uvicorn.error"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    assert logging.getLogger("tokgen.access").getEffectiveLevel() == logging.INFO
    configured("debug")  # configuring again replaces the handler, never adds a second
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    assert sum(isinstance(h, logs.StderrHandler) for h in logging.getLogger().handlers) == 1


def test_a_callers_request_id_is_kept_only_when_plausible():
    assert request_id("trace-7f3a.b/c:d@e+f=") == "trace-7f3a.b/c:d@e+f="
    for bad in (None, "", "two words", "line\nbreak", 'quo"te', "x" * 129, "é"):
        assert re.fullmatch(r"[0-9a-f]{32}", request_id(bad)), bad
    assert request_id(None) != request_id(None)


def test_grpc_peers_read_as_http_ones():
    assert grpc_peer("ipv4:10.0.0.7:5555") == "10.0.0.7:5555"
    assert grpc_peer("ipv6:%5B::1%5D:5555") == "[::1]:5555"
    assert grpc_peer("unix:/run/tokgen.sock") == "unix:/run/tokgen.sock"


def test_every_command_takes_the_logging_options_before_or_after_its_name():
    parser = build_parser()
    before = parser.parse_args(["--log-level", "debug", "client", "info"])
    after = parser.parse_args(["jobs", "list", "--log-level", "error", "--log-format", "json"])
    assert before.log_level == "debug" and (after.log_level, after.log_format) == ("error", "json")
    assert not hasattr(parser.parse_args(["serve"]), "log_level")  # not given: the environment decides
    for command in ("serve", "worker"):
        shown = " ".join(
            parser._subparsers._group_actions[0].choices[command].format_help().split()  # type: ignore[union-attr]
        )
        assert "--log-level {debug,info,warning,error}" in shown and "[env TOKGEN_LOG_LEVEL]" in shown
        assert "--log-format {text,json}" in shown and "[env TOKGEN_LOG_FORMAT]" in shown


# ---- a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, prior_set):
    """JSON lines, API keys, the HTTP port too."""
    cwd = tmp_path_factory.mktemp("logs")
    (cwd / "keys").write_text(KEY + "\n")
    options = ["--no-worker", "--http-port", "0", "--api-keys-file", str(cwd / "keys")]
    options += ["--log-format", "json"]
    served = start_serve(cwd, tiny_model_dir, prior_set, *options)
    yield served
    assert stop(served) == 0
    assert not tracebacks(served.log), tracebacks(served.log)


def sent_back(call) -> str | None:
    """The ``x-request-id`` a call got back (initial metadata, or with the trailers when
    gRPC answered a refused call in one "trailers-only" response)."""
    for metadata in (call.initial_metadata(), call.trailing_metadata()):
        for key, value in metadata or ():
            if key == "x-request-id":
                return value
    return None


def access_records(server, count: int) -> list[dict]:
    """The server's access-log records, once there are ``count`` of them. Every line the
    server wrote is one JSON object."""
    deadline = time.monotonic() + 30
    while True:
        records = [json.loads(line) for line in list(server.log)]
        access = [r for r in records if r["logger"] == "tokgen.access"]
        if len(access) >= count or time.monotonic() > deadline:
            return access
        time.sleep(0.1)


def test_one_access_line_per_call_with_its_request_id_and_no_secrets(server):
    keyed = (("x-api-key", KEY),)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.TokgenServiceStub(channel)
        _, info = stub.GetModelInfo.with_call(
            pb.GetModelInfoRequest(), metadata=(*keyed, ("x-request-id", "trace-grpc-1")), timeout=30
        )
        assert sent_back(info) == "trace-grpc-1"
        with pytest.raises(grpc.RpcError) as refused:  # no key
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        refused_id = sent_back(refused.value)
        stream = stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.2), metadata=keyed)
        assert list(stream)[-1].HasField("summary")
        stream_id = sent_back(stream)
    http = f"http://{server.http}"
    headers = {"authorization": f"Bearer {KEY}", "x-request-id": "trace-http-1"}
    listed = httpx.get(f"{http}/v1/jobs", headers=headers)
    assert listed.status_code == 200 and listed.headers["x-request-id"] == "trace-http-1"
    denied = httpx.get(f"{http}/v1/jobs?page_token=abc", headers={"x-request-id": "bad id"})
    assert denied.status_code == 401 and re.fullmatch(r"[0-9a-f]{32}", denied.headers["x-request-id"])
    assert httpx.get(f"{http}/healthz").status_code == 200  # a probe: not at info

    access = access_records(server, 5)
    by_id = {r["request_id"]: r for r in access}
    assert len(access) == len(by_id) == 5, access  # one line per call; health checks not at info
    assert refused_id and stream_id and {refused_id, stream_id} <= set(by_id)
    grpc_info = by_id["trace-grpc-1"]
    assert {k: grpc_info[k] for k in ("level", "transport", "method", "status")} == {
        "level": "INFO",
        "transport": "grpc",
        "method": "/tokgen.v1.TokgenService/GetModelInfo",
        "status": "OK",
    }
    assert grpc_info["peer"].startswith("127.0.0.1:") and 0 <= grpc_info["duration_s"] < 30
    assert (by_id[refused_id]["status"], by_id[stream_id]["status"]) == ("UNAUTHENTICATED", "OK")
    assert by_id[stream_id]["method"] == "/tokgen.v1.TokgenService/Continue"
    assert by_id[stream_id]["duration_s"] > grpc_info["duration_s"]  # the whole stream
    http_listed, http_denied = by_id["trace-http-1"], by_id[denied.headers["x-request-id"]]
    assert [http_listed[k] for k in ("transport", "method", "path")] == ["http", "GET", "/v1/jobs"]
    assert (http_listed["status"], http_denied["status"]) == (200, 401)
    assert "abc" not in json.dumps(http_denied)  # no query strings
    everything = "".join(server.log)
    assert KEY not in everything and "Bearer" not in everything


def test_the_request_series_carry_the_model_label(server, tiny_model_dir, prior_set):
    model = f"{model_id(tiny_model_dir)}+{model_id(prior_set)}"
    with grpc.insecure_channel(server.address) as channel:
        stream = pb_grpc.TokgenServiceStub(channel).Continue
        request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.1)
        assert list(stream(request, metadata=(("x-api-key", KEY),)))
    assert httpx.get(f"http://{server.http}/healthz").status_code == 200
    text = httpx.get(f"http://{server.metrics}/metrics").text
    assert f'tokgen_requests_total{{code="OK",method="Continue",model="{model}"}}' in text
    for family in ("time_to_first_audio", "request_duration", "prepare"):
        assert f'tokgen_{family}_seconds_count{{model="{model}"}}' in text, family
    assert f'tokgen_http_requests_total{{code="200",method="GET",model="{model}",route="/healthz"}}' in text


def test_a_client_leaving_mid_send_is_logged_and_counted_as_cancelled(caplog):
    """A stream whose client cancels while its reply is being sent: grpc drops the reply
    generator (it is closed later with GeneratorExit, the context neither cancelled nor
    coded). The access log and ``tokgen_requests_total`` must say CANCELLED, not UNKNOWN
    (what an uncaught error gives, which an alert pages on), and grpc's own ERROR for a
    reply sent to a departed client (with a traceback) must not reach INFO. A real grpc.aio
    server over a socket, set up as ``tokgen serve`` sets its own (its two outer
    interceptors, ``quiet_client_departures``), a handler that only yields (so a
    cancellation can only reach it as GeneratorExit)."""
    from tokgen.monitoring import metrics
    from tokgen.serve.access_log import AccessLogInterceptor, quiet_client_departures
    from tokgen.serve.interceptors import CallMetricsInterceptor

    seen: list[str] = []

    async def endless(request, context):
        try:
            while True:
                yield b"x" * 100_000  # more than a flow-control window: sends wait on the client
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    def counted(code: str) -> float:
        return metrics.REQUESTS.labels("Endless", code, metrics.serving_model())._value.get()

    async def scenario() -> None:
        quiet_client_departures()
        server = grpc.aio.server(interceptors=[AccessLogInterceptor(), CallMetricsInterceptor()])
        handler = grpc.unary_stream_rpc_method_handler(endless)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"Endless": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()

        def client() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                for _ in range(3):
                    call = channel.unary_stream("/t.T/Endless")(b"", timeout=30)
                    next(call)
                    call.cancel()

        await asyncio.to_thread(client)
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await server.stop(1)

    before = {code: counted(code) for code in ("CANCELLED", "UNKNOWN")}
    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert seen == ["GeneratorExit"] * 3  # the path under test, not a plain cancellation
    lines = [r.getMessage() for r in caplog.records if "/t.T/Endless" in r.getMessage()]
    assert len(lines) == 3 and all(" CANCELLED " in line for line in lines), lines
    assert counted("CANCELLED") - before["CANCELLED"] == 3 and counted("UNKNOWN") == before["UNKNOWN"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


def test_grpcs_error_for_a_departed_client_becomes_one_debug_line():
    """What grpc logs when a reply's send finds the call gone (its ERROR, with the
    traceback), through the filter: DEBUG, the message kept, no traceback; any other
    record of that logger passes as it was."""
    from tokgen.serve.access_log import _client_departure

    ExecuteBatchError = type("ExecuteBatchError", (Exception,), {})  # grpc's is private (cygrpc)

    def record(error: Exception) -> logging.LogRecord:
        try:
            raise error
        except Exception:
            exc_info = sys.exc_info()
        return logging.LogRecord(
            "grpc._cython.cygrpc",
            logging.ERROR,
            __file__,
            1,
            "ExecuteBatchError raised in core by servicer method [%s]",
            ("/m",),
            exc_info,
        )

    departed = record(ExecuteBatchError('Failed "execute_batch"'))
    assert _client_departure(departed)
    assert (departed.levelno, departed.levelname, departed.exc_info) == (logging.DEBUG, "DEBUG", None)
    assert "servicer method [/m]" in departed.getMessage() and "client left" in departed.getMessage()
    other = record(ValueError("a real fault"))
    assert _client_departure(other) and other.levelno == logging.ERROR and other.exc_info is not None
