"""``tokgen serve`` as a process, and real clients: ``tokgen client``, Prometheus' text
format on the metrics port, ``buf curl`` (a generic reflection client), SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokgen.cli import main
from tokgen.errors import ServerError
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

BUF = Path(__file__).parent.parent / ".tools" / "node_modules" / ".bin" / "buf"


class Served:
    def __init__(self, proc: subprocess.Popen, where: dict):
        self.proc = proc
        self.address = where["listening"]
        self.metrics = where["metrics"]
        self.redis = where["redis"]
        self.health = where.get("health")  # with --health-port
        self.http = where.get("http")  # with --http-port
        # Its stderr (a line per call, the access log), read as it comes: a full pipe would
        # block the server mid-log (and read as a hang).
        self.log: list[str] = []
        self.drain = threading.Thread(target=lambda: self.log.extend(proc.stderr), daemon=True)
        self.drain.start()


def tracebacks(log: list[str], after: int = 40) -> str:
    """Each traceback in a server's log with the lines that follow it (the exception
    itself): what a failing "no traceback logged" check must show, since the tail of a
    long access log rarely holds it."""
    starts = [i for i, line in enumerate(log) if "Traceback" in line]
    return "\n...\n".join("".join(log[max(0, i - 3) : i + after]) for i in starts)


def start_serve(
    cwd: Path, tiny_model_dir: Path, prior_set: Path, *extra: str, env: dict[str, str] | None = None
) -> Served:
    cmd = [sys.executable, "-m", "tokgen", "serve", "--port", "0", "--metrics-port", "0", "--backend", "hf"]
    cmd += ["--codec", str(tiny_model_dir), "--priors", str(prior_set), *extra]
    env = {**os.environ, "TOKGEN_CACHE_DIR": str(cwd / "cache"), **(env or {})}  # its own embedded Redis
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    served = Served(proc, json.loads(proc.stdout.readline()))
    with grpc.insecure_channel(served.address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        deadline = time.monotonic() + 120
        while check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline and proc.poll() is None, "never became ready"
            time.sleep(0.2)
    return served


def stop(served: Served) -> int:
    served.proc.send_signal(signal.SIGTERM)
    try:
        return served.proc.wait(timeout=60)
    finally:
        served.proc.kill()
        served.drain.join(timeout=10)
        served.proc.stdout.close()
        served.proc.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, prior_set):
    served = start_serve(tmp_path_factory.mktemp("serve"), tiny_model_dir, prior_set)
    yield served
    assert stop(served) == 0


def test_client_continue_writes_the_requested_length(server, tmp_path, tone, capsys):
    sf.write(tmp_path / "prime.wav", tone[:3200], 16000)
    out = tmp_path / "out" / "continuation.wav"
    args = ["client", "continue", "--server", server.address, "--prime", str(tmp_path / "prime.wav")]
    assert main([*args, "--seconds", "0.3", "--out", str(out), "--seed", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sf.info(str(out)).frames == 4800 and sf.info(str(out)).samplerate == 16000
    assert report["seconds"] == 0.3 and 0 < report["time_to_first_audio_s"] <= report["total_s"]
    assert not list(out.parent.glob("*.part"))
    # A bad request: the server's message names the field; nothing is written.
    bad = tmp_path / "bad.wav"
    assert main([*args, "--seconds", "0.1", "--out", str(bad), "--temperature", "0"]) == 2
    assert "INVALID_ARGUMENT: sampling.temperature" in capsys.readouterr().err
    assert not bad.exists() and not list(tmp_path.glob("bad.wav*"))
    assert main(["client", "info", "--server", server.address, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [lv["level"] for lv in info["levels"]] == [0, 1] and info["engine_backend"] == "hf"


def test_client_continue_writes_one_file_per_sample(server, tmp_path, tone, capsys):
    sf.write(tmp_path / "prime.wav", tone[:3200], 16000)
    args = ["client", "continue", "--server", server.address, "--prime", str(tmp_path / "prime.wav")]
    args += ["--seconds", "0.2", "--seed", "4", "--num-samples", "2", "--sample-rate", "8000", "--json"]
    assert main([*args, "--out", str(tmp_path / "x.flac")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outs"] == [str(tmp_path / "x_0.flac"), str(tmp_path / "x_1.flac")]
    assert report["seeds"] == [4, 5] and report["seconds"] == 0.2
    for out in report["outs"]:
        assert sf.info(out).frames == 1600 and sf.info(out).samplerate == 8000
    assert not list(tmp_path.glob("*.part"))


def test_client_reports_an_unreachable_server(tmp_path, capsys):
    args = ["client", "continue", "--server", "127.0.0.1:9", "--mode", "ancestral", "--seconds", "1"]
    assert main([*args, "--out", str(tmp_path / "x.wav"), "--timeout", "5"]) == 3  # Exit.UNAVAILABLE
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_metrics_port_serves_prometheus_text(server):
    with grpc.insecure_channel(server.address) as channel:
        request = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.05)
        replies = list(pb_grpc.TokgenServiceStub(channel).Continue(request, timeout=60))
    assert replies[-1].WhichOneof("event") == "summary"
    text = urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10).read().decode()
    assert 'tokgen_requests_total{code="OK",method="Continue",model="' in text
    count = next(
        line for line in text.splitlines() if line.startswith("tokgen_time_to_first_audio_seconds_count")
    )
    assert float(count.split()[-1]) >= 1
    assert "tokgen_requests_active 0.0" in text


@pytest.mark.skipif(not BUF.exists(), reason="buf not installed: run scripts/proto.sh check (CI does)")
def test_buf_curl_lists_and_calls_the_service_by_reflection(server):
    base = ["--protocol", "grpc", "--http2-prior-knowledge"]
    url = f"http://{server.address}"
    listed = subprocess.run([BUF, "curl", *base, "--list-services", url], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "tokgen.v1.TokgenService" in listed.stdout.split()
    info = subprocess.run(
        [BUF, "curl", *base, "-d", "{}", f"{url}/tokgen.v1.TokgenService/GetModelInfo"],
        capture_output=True,
        text=True,
    )
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["sampleRate"] == 16000
    body = json.dumps({"mode": "MODE_ANCESTRAL", "seconds": 0.05})
    stream = subprocess.run(
        [BUF, "curl", *base, "-d", body, f"{url}/tokgen.v1.TokgenService/Continue"],
        capture_output=True,
        text=True,
    )
    assert stream.returncode == 0, stream.stderr
    assert '"chunk"' in stream.stdout and '"summary"' in stream.stdout


def test_sigterm_lets_in_flight_streams_finish_and_refuses_new_ones(tmp_path, tiny_model_dir, prior_set):
    served = start_serve(tmp_path, tiny_model_dir, prior_set, "--grace-seconds", "60")
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.TokgenServiceStub(channel)
            call = stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1.0), timeout=120)
            assert next(call).WhichOneof("event") == "chunk"  # in flight
            served.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as err:
                stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            replies = list(call)
            assert replies[-1].WhichOneof("event") == "summary"
            assert replies[-1].summary.audio_seconds == pytest.approx(1.0)
        assert served.proc.wait(timeout=60) == 0
    finally:
        stop(served)


def test_streams_beyond_the_grace_period_are_cancelled(tmp_path, tiny_model_dir, prior_set):
    served = start_serve(tmp_path, tiny_model_dir, prior_set, "--grace-seconds", "1")
    try:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.TokgenServiceStub(channel)
            call = stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=60.0), timeout=120)
            assert next(call).WhichOneof("event") == "chunk"
            started = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError):
                list(call)
            assert served.proc.wait(timeout=60) == 0
            assert time.monotonic() - started < 30
    finally:
        stop(served)


def test_serve_refuses_bad_options_before_listening(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--insecure" in capsys.readouterr().err
    assert main(["serve", "--max-active", "0", "--port", "0"]) == 2
    assert "--max-active" in capsys.readouterr().err
    assert main(["serve", "--tls-cert", "/nonexistent.pem", "--port", "0"]) == 2
    assert "certificate and a key" in capsys.readouterr().err


def test_the_sync_client_submits_waits_for_and_fetches_a_job(server, tmp_path, tone):
    """TokgenClient's job methods against `tokgen serve` (embedded queue and worker): the
    result comes over StreamJobResult on a channel that receives 4 MiB at most."""
    from tokgen.client import TokgenClient
    from tokgen.codec.codes import load_codes

    sf.write(tmp_path / "prime.wav", tone[:3200], 16000)
    with TokgenClient(server.address) as client:
        client.channel.close()  # the same client on a channel with gRPC's default 4 MiB limit
        client.channel = grpc.insecure_channel(
            server.address, options=[("grpc.max_receive_message_length", 4 << 20)]
        )
        client.jobs = jpb_grpc.JobServiceStub(client.channel)
        job = client.submit_job(tmp_path / "prime.wav", seconds=0.2, seed=4, idempotency_key="sync/1")
        assert (
            client.submit_job(tmp_path / "prime.wav", seconds=0.2, seed=4, idempotency_key="sync/1").job_id
            == job.job_id
        )
        done = client.wait_job(job.job_id, timeout=120)
        assert done.state == jpb.JOB_STATE_SUCCEEDED and done.seed == 4
        audio, rate = client.job_audio(job.job_id)
        assert rate == 16000 and audio.shape == (3200,) and np.abs(audio).max() > 0
        assert load_codes(client.job_result(job.job_id).codes).reference is not None
        with pytest.raises(ServerError) as missing:
            client.job("nope")
        assert missing.value.status == "NOT_FOUND"


def test_jobs_through_the_embedded_queue_and_worker(server, tmp_path, tone, capsys):
    """`tokgen serve` on embedded defaults owns a Redis and renders jobs in-process."""
    sf.write(tmp_path / "prime.wav", tone[:3200], 16000)
    conn = ["--server", server.address]
    submit = ["jobs", "submit", *conn, "--prime", str(tmp_path / "prime.wav"), "--seconds", "0.2", "--json"]

    def run(*args: str) -> dict:
        assert main(list(args)) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first = run(*submit, "--idempotency-key", "batch-1/a", "--priority", "high")
    again = run(*submit, "--idempotency-key", "batch-1/a")
    assert first["created"] and not again["created"] and again["job_id"] == first["job_id"]
    other = run(*submit[:-1], "--json", "--mode", "primed", "--seed", "2")
    final = run("jobs", "watch", first["job_id"], *conn)
    assert final["state"] == "succeeded" and final["progress"] == 1.0 and final["attempts"] == 1
    out = tmp_path / "job.wav"
    run("jobs", "fetch", first["job_id"], *conn, "--out", str(out), "--codes-out", str(tmp_path / "job.npz"))
    assert sf.info(str(out)).frames == 3200 and (tmp_path / "job.npz").stat().st_size > 0
    assert run("jobs", "watch", other["job_id"], *conn)["state"] == "succeeded"
    listed = run("jobs", "list", *conn, "--state", "succeeded", "--page-size", "1")
    assert len(listed["jobs"]) == 1 and listed["next_page_token"]
    status = run("jobs", "status", first["job_id"], *conn)
    assert status["state"] == "succeeded" and status["priority"] == "high"
    # bad specs are refused before queueing, naming the field; unknown jobs are NOT_FOUND
    assert main(["jobs", "submit", *conn, "--mode", "ancestral", "--seconds", "700"]) == 2
    assert "INVALID_ARGUMENT: request.seconds" in capsys.readouterr().err
    assert main(["jobs", "status", "nope", *conn]) == 5  # Exit.NOT_FOUND
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["jobs", "fetch", "nope", *conn, "--out", str(tmp_path / "x.wav")]) == 5
    capsys.readouterr()


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_server_leaves_no_prepare_worker_behind(tmp_path, tiny_model_dir, prior_set):
    """The prime workers (``TOKGEN_PREPARE_WORKERS``) must notice that a SIGKILLed server
    is gone and exit (the end of file on their socket, or their parent's death where
    another process still holds the server's end)."""
    served = start_serve(tmp_path, tiny_model_dir, prior_set, env={"TOKGEN_PREPARE_WORKERS": "2"})
    try:
        workers = [
            p for p in children(served.proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()
        ]
        assert len(workers) == 2  # the default, started before the server reports ready
    finally:
        served.proc.kill()
        served.proc.wait(timeout=30)
        served.drain.join(timeout=10)
    deadline = time.monotonic() + 15
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers)
