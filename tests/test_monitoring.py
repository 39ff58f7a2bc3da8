"""End to end: a real Prometheus server scrapes a real ``tokgen serve`` (API only) and a
real ``tokgen worker``, with tokgen's own alerting rules loaded; traffic goes through
gRPC; the assertions read Prometheus' HTTP API, as a dashboard or an alert would.

Also the offline checks of ``deploy/prometheus``: ``promtool check config``, ``check
rules`` and ``test rules`` (the alerts' unit tests), and that every rule uses only
metrics tokgen exports."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from tests.test_dashboard import exported_metric_names
from tests.test_serve_process import start_serve, stop
from tokgen.monitoring.health import check
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

DEPLOY = Path(__file__).parent.parent / "deploy" / "prometheus"
RULES = DEPLOY / "rules" / "tokgen.rules.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMTOOL is None or PROMETHEUS is None,
    reason="Debian's prometheus package is missing: ./scripts/install.sh installs it",
)


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=DEPLOY, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_prometheus
def test_promtool_checks_the_config_and_rules_and_runs_the_alert_unit_tests():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "rules/tokgen.rules.yml")
    assert "SUCCESS" in promtool("test", "rules", "tests/tokgen.rules.test.yml")


def test_rules_use_only_exported_metrics_and_every_alert_is_tested_and_documented():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    used = {m for r in rules for m in re.findall(r"\btokgen_[a-z0-9_]+", r["expr"])}
    assert used and used <= exported_metric_names(), used - exported_metric_names()
    for r in rules:  # a recording rule's name must exist before it is read
        assert set(re.findall(r"\btokgen:[a-z0-9_:]+", r["expr"])) <= recorded
    alerts = {r["alert"] for r in rules if "alert" in r}
    tests = (DEPLOY / "tests" / "tokgen.rules.test.yml").read_text()
    operations = (Path(__file__).parent.parent / "docs" / "OPERATIONS.md").read_text()
    for alert in alerts:
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in tests, alert
        assert f"### {alert}" in operations, alert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]):
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        assert PROMETHEUS is not None
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.proc.poll() is None, "prometheus exited"
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict | list:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        reply = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> dict[tuple, float]:
        """{(label values, sorted by name): value} of an instant query."""
        data = self.api("query", query=expr)
        return {
            tuple(v for _, v in sorted(r["metric"].items())): float(r["value"][1]) for r in data["result"]
        }

    def value(self, expr: str) -> float | None:
        """The one value of a query that aggregates to a single series (None: no series)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def wait_for(self, expr: str, want: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.value(expr)) != want:
            assert time.monotonic() < deadline, f"{expr} = {got}, not {want}"
            time.sleep(0.5)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def start_worker(
    cwd: Path, redis_url: str, tiny_model_dir: Path, prior_set: Path
) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "tokgen", "worker", "--redis-url", redis_url, "--backend", "hf"]
    cmd += ["--metrics-port", "0", "--health-port", "0", "--worker-concurrency", "1"]
    cmd += ["--codec", str(tiny_model_dir), "--priors", str(prior_set)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
    return proc, json.loads(proc.stdout.readline())


@needs_prometheus
def test_prometheus_scrapes_server_and_worker_through_a_workload(tmp_path, tiny_model_dir, prior_set, tone):
    served = start_serve(tmp_path, tiny_model_dir, prior_set, "--no-worker", "--health-port", "0")
    worker, worker_at = start_worker(tmp_path, served.redis, tiny_model_dir, prior_set)
    prometheus = None
    try:
        # Probes on the plaintext health ports: both ready (the worker once its models load).
        assert check(served.health) == "SERVING" and check(served.health, "live") == "SERVING"
        deadline = time.monotonic() + 120
        while check(worker_at["health"]) != "SERVING":
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.2)
        probe = [sys.executable, "-m", "tokgen", "health", "--address", worker_at["health"]]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, "SERVING\n")
        prometheus = Prometheus(
            tmp_path / "prometheus", {"tokgen-server": served.metrics, "tokgen-worker": worker_at["metrics"]}
        )
        # Before any traffic: the queue is empty and both processes reach Redis.
        prometheus.wait_for("count(tokgen_redis_up == 1)", 2)
        prometheus.wait_for("max(tokgen_jobs_queued)", 0)

        with grpc.insecure_channel(served.address) as channel:
            stream = pb_grpc.TokgenServiceStub(channel).Continue
            replies = list(stream(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.3)))
            assert replies[-1].HasField("summary")
            with pytest.raises(grpc.RpcError) as bad:
                list(stream(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=-1)))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            jobs = jpb_grpc.JobServiceStub(channel)
            # Three jobs, one worker rendering one at a time: the queue holds some for a while.
            requests = [
                pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1.0, sampling=pb.SamplingParams(seed=i))
                for i in range(3)
            ]
            ids = [jobs.SubmitJob(jpb.SubmitJobRequest(request=r)).job.job_id for r in requests]
            deadline = time.monotonic() + 180
            while any(
                jobs.GetJob(jpb.GetJobRequest(job_id=i)).job.state != jpb.JOB_STATE_SUCCEEDED for i in ids
            ):
                assert time.monotonic() < deadline, "jobs did not finish"
                time.sleep(0.3)

        server_job, worker_job = '{job="tokgen-server"}', '{job="tokgen-worker"}'
        # Calls, by method and code (health checks are not counted).
        prometheus.wait_for('sum(tokgen_requests_total{method="Continue",code="OK"})', 1)
        prometheus.wait_for('sum(tokgen_requests_total{method="Continue",code="INVALID_ARGUMENT"})', 1)
        prometheus.wait_for('sum(tokgen_requests_total{method="SubmitJob",code="OK"})', 3)
        assert prometheus.value('sum(tokgen_requests_total{method="Check"})') is None
        # Stream histograms: one stream, one time to first audio, some chunk gaps.
        assert prometheus.value("sum(tokgen_time_to_first_audio_seconds_count)") == 1
        assert prometheus.value("sum(tokgen_request_duration_seconds_count)") == 1
        assert prometheus.value('sum(tokgen_realtime_factor_count{source="stream"})') == 1
        assert prometheus.value('sum(tokgen_audio_seconds_total{source="stream"})') == pytest.approx(0.3)
        # Jobs: submitted on the server, run on the worker, queue back to 0 and seen above 0.
        assert prometheus.value('sum(tokgen_jobs_submitted_total{priority="normal"})') == 3
        prometheus.wait_for('sum(tokgen_job_attempts_total{job="tokgen-worker",state="succeeded"})', 3)
        assert prometheus.value(f"sum(tokgen_job_queue_wait_seconds_count{worker_job})") == 3
        assert prometheus.value(f"sum(tokgen_job_run_seconds_count{worker_job})") == 3
        assert prometheus.value('sum(tokgen_audio_seconds_total{source="job"})') == pytest.approx(3.0)
        prometheus.wait_for("max(tokgen_jobs_queued)", 0)
        prometheus.wait_for("max(tokgen_jobs_running)", 0)
        assert prometheus.value("max(max_over_time(tokgen_jobs_queued[10m]))") >= 1
        assert prometheus.value("max(tokgen_jobs_dead_letter)") == 0
        assert prometheus.value(f"sum(tokgen_worker_slots{worker_job})") == 1
        assert prometheus.value(f"sum(tokgen_worker_leases_held{worker_job})") == 0
        # Engines: each process's engines generated tokens at every level, in timed steps.
        for job in (server_job, worker_job):
            tokens = prometheus.query(f"sum by (level) (tokgen_engine_generated_tokens_total{job})")
            assert sorted(tokens) == [("0",), ("1",)] and all(v > 0 for v in tokens.values())
            steps = prometheus.value(f"sum(tokgen_engine_step_seconds_count{job})")
            assert steps is not None and steps > 0
        # Build info names each process's role, backend and models.
        build = prometheus.api("query", query="tokgen_build_info")["result"]
        assert sorted(b["metric"]["role"] for b in build) == ["server", "worker"]
        assert {b["metric"]["backend"] for b in build} == {"hf"}
        assert all(re.fullmatch(r".+@[0-9a-f]{12}", b["metric"]["priors"]) for b in build)
        # tokgen's rules evaluate on real series without errors; no alert fires.
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        assert rules and all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        alerts = prometheus.api("alerts")["alerts"]
        assert [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"] == []
    finally:
        if prometheus is not None:
            prometheus.close()
        worker.terminate()
        assert worker.wait(timeout=60) == 0
        worker.stdout.close()
        assert stop(served) == 0


def test_health_cli_exits_1_when_nothing_answers():
    """1, not tokgen's usual 2: Docker's HEALTHCHECK reserves exit code 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # a port nobody listens on (bound, not listening)
        address = f"127.0.0.1:{s.getsockname()[1]}"
        cmd = [sys.executable, "-m", "tokgen", "health", "--address", address, "--timeout", "2"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "health check of 127.0.0.1:" in done.stderr


def test_the_operations_doc_lists_every_setting():
    from tokgen.settings import Settings

    operations = (Path(__file__).parent.parent / "docs" / "OPERATIONS.md").read_text()
    missing = [f"TOKGEN_{name.upper()}" for name in Settings.model_fields]
    missing = [var for var in missing if f"`{var}`" not in operations]
    assert missing == []
