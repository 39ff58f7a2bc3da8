"""The HTTP API and the page of ``tokgen serve --http-port``, over real sockets: one real
``tokgen serve`` process (tiny codec and priors, its own Redis and in-process worker, two
tenants' API keys), real HTTP clients (httpx, a raw socket) and, for the page, a real
headless Chromium driven through selenium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.test_serve_process import tracebacks
from tests.test_serve_security import pki  # noqa: F401 (a fixture: a throwaway CA and certificates)
from tokgen.serve.admission import Admission
from tokgen.serve.http import HttpApi, HttpServer
from tokgen.serve.security import TlsFiles
from tokgen.serve.service import TokgenServicer
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
MAX_REQUEST_BYTES = 1 << 20
PRIME = Path(__file__).parent.parent / "tokgen" / "assets" / "examples" / "prime.flac"


@dataclass
class HttpServed:
    proc: subprocess.Popen
    url: str
    grpc: str
    metrics: str
    log: list[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, prior_set):
    """``tokgen serve --http-port 0`` with two tenants' keys; one continuation at a time
    and none waiting (so a second one at once is refused: 429)."""
    cwd = tmp_path_factory.mktemp("http")
    cmd = [sys.executable, "-m", "tokgen", "serve", "--port", "0", "--metrics-port", "0", "--http-port", "0"]
    cmd += ["--backend", "hf", "--codec", str(tiny_model_dir), "--priors", str(prior_set)]
    cmd += ["--max-active", "1", "--max-queued", "0", "--max-request-bytes", str(MAX_REQUEST_BYTES)]
    env = {**os.environ, "TOKGEN_CACHE_DIR": str(cwd / "cache"), "TOKGEN_API_KEYS": f"{ALICE},{BOB}"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    where = json.loads(proc.stdout.readline())
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()  # a full pipe blocks
    served = HttpServed(proc, f"http://{where['http']}", where["listening"], where["metrics"], log)
    deadline = time.monotonic() + 120
    while httpx.get(f"{served.url}/healthz").status_code != 200:
        assert time.monotonic() < deadline and proc.poll() is None, "never became ready"
        time.sleep(0.2)
    yield served
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert not tracebacks(log), tracebacks(log)


def keyed(key: str = ALICE) -> dict:
    return {"x-api-key": key}


def form(seconds: float = 0.3, **fields) -> dict:
    return {"seconds": str(seconds), **{k: str(v) for k, v in fields.items()}}


def prime_bytes(tone: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone[:3200], 16000, format="WAV")
    return buf.getvalue()


def samples(wav: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(wav), dtype="int16")[0].astype(int)


def same_audio(a: np.ndarray, b: np.ndarray) -> bool:
    """The same samples, but for rounding: a stream decodes in pieces cut where the codes
    happened to be final, which moves a sample by at most one step (as in test_serve)."""
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


def error_of(response: httpx.Response) -> dict:
    body = response.json()["error"]
    assert body["code"] == response.status_code
    return body


# ---- continuations --------------------------------------------------------------------------


def test_a_continuation_streams_as_wav_while_it_is_generated(server, tone):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    pieces: list[tuple[float, int]] = []
    started = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{server.url}/v1/continuations",
        headers=keyed(),
        files=files,
        data=form(2.0, seed=7),
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.read()
        headers = response.headers
        body = b""
        for data in response.iter_raw():
            pieces.append((time.perf_counter() - started, len(data)))
            body += data
    assert headers["content-type"] == "audio/wav" and headers["x-tokgen-seed"] == "7"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert headers["x-tokgen-sample-rate"] == "16000"
    audio, rate = sf.read(io.BytesIO(body), dtype="int16")
    assert rate == 16000 and audio.size == 32000 and len(body) == 44 + 2 * 32000
    # Streamed: audio arrived in several pieces, the first well before the last.
    assert len(pieces) >= 2 and pieces[0][0] < pieces[-1][0]

    # The same seed and settings: the same audio, over HTTP as over gRPC (one Generator).
    again = httpx.post(
        f"{server.url}/v1/continuations", headers=keyed(), files=files, data=form(2.0, seed=7), timeout=120
    )
    assert same_audio(samples(again.content), samples(body))
    request = pb.ContinueRequest(prime_audio=prime_bytes(tone), seconds=2.0)
    request.sampling.seed = 7
    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.TokgenServiceStub(channel)
        replies = stub.Continue(request, metadata=[("x-api-key", BOB)], timeout=120)
        pcm = b"".join(r.chunk.pcm for r in replies if r.HasField("chunk"))
    assert same_audio(np.frombuffer(pcm, "<i2").astype(int), samples(body))


def test_without_a_seed_each_continuation_draws_one_and_reports_it(server, tone):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    url = f"{server.url}/v1/continuations"
    first = httpx.post(url, headers=keyed(), files=files, data=form(), timeout=120)
    second = httpx.post(url, headers=keyed(), files=files, data=form(), timeout=120)
    assert first.status_code == second.status_code == 200
    seeds = first.headers["x-tokgen-seed"], second.headers["x-tokgen-seed"]
    assert seeds[0] != seeds[1] and not same_audio(samples(first.content), samples(second.content))
    replay = httpx.post(url, headers=keyed(), files=files, data=form(seed=seeds[0]), timeout=120)
    assert same_audio(samples(replay.content), samples(first.content))


def test_several_samples_come_as_a_zip_and_the_output_rate_as_asked(server, tone):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    url = f"{server.url}/v1/continuations"
    data = form(seed=7, num_samples=2, sample_rate=22050, format="flac")
    several = httpx.post(url, headers=keyed(), files=files, data=data, timeout=120)
    assert several.status_code == 200, several.text
    assert several.headers["content-type"] == "application/zip" and several.headers["x-tokgen-seeds"] == "7,8"
    with zipfile.ZipFile(io.BytesIO(several.content)) as archive:
        assert archive.namelist() == ["continuation_0.flac", "continuation_1.flac"]
        decoded = [sf.read(io.BytesIO(archive.read(n)), dtype="int16") for n in archive.namelist()]
    assert all(rate == 22050 and audio.size == round(0.3 * 22050) for audio, rate in decoded)
    one = httpx.post(url, headers=keyed(), files=files, data=form(seed=8, sample_rate=22050), timeout=120)
    assert one.headers["x-tokgen-sample-rate"] == "22050"
    assert sf.info(io.BytesIO(one.content)).samplerate == 22050
    first, second = (audio.astype(int) for audio, _ in decoded)
    assert same_audio(samples(one.content), second) and not same_audio(first, second)  # sample 1: seed 8
    for fields, field in (({"num_samples": 9}, "num_samples"), ({"sample_rate": 100}, "sample_rate")):
        bad = httpx.post(url, headers=keyed(), files=files, data=form(**fields), timeout=60)
        assert bad.status_code == 400 and error_of(bad)["field"] == field


def test_a_job_renders_at_the_rate_and_loudness_asked_for_and_one_sample_only(server, tone):
    from tokgen.loudness import integrated_loudness

    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    url = f"{server.url}/v1/jobs"
    several = httpx.post(url, headers=keyed(), files=files, data=form(num_samples=2), timeout=60)
    assert several.status_code == 400 and error_of(several)["field"] == "num_samples"
    data = form(0.5, sample_rate=8000, loudness_lufs=-30)
    job_id = httpx.post(url, headers=keyed(), files=files, data=data, timeout=60).json()["job"]["job_id"]
    assert wait_for_job(server, job_id)["state"] == "succeeded"
    for fmt in ("wav", "flac"):
        result = httpx.get(f"{url}/{job_id}/audio", params={"format": fmt}, headers=keyed())
        audio, rate = sf.read(io.BytesIO(result.content), dtype="float32")
        assert rate == 8000 and audio.size == 4000
        assert integrated_loudness(audio, rate) == pytest.approx(-30, abs=0.1)


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_other_formats_stream_as_files_that_decode(server, tone, fmt):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    response = httpx.post(
        f"{server.url}/v1/continuations",
        headers=keyed(),
        files=files,
        data=form(1.0, format=fmt),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        {"flac": "audio/flac", "mp3": "audio/mpeg"}.get(fmt, "audio/ogg")
    )
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == 16000
    if fmt == "mp3":  # the encoder's delay and its last frame's padding: a few frames more
        assert 16000 <= audio.size <= 16000 + 4 * 576
    else:
        assert audio.size == 16000


def test_bad_input_is_400_naming_the_form_field(server, tone):
    url = f"{server.url}/v1/continuations"
    prime = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    cases = [
        (prime, form(temperature=0), "temperature", "must be in (0, 100]"),
        (prime, {"seconds": "abc"}, "seconds", "must be a number"),
        (prime, form(seconds=601), "seconds", "must be in (0, 600]"),
        (prime, form(top_k=-1), "top_k", "must be in [0,"),
        (prime, form(key_guidance=21), "key_guidance", "must be in [0, 20]"),
        (prime, form(instrument_guidance=-1), "instrument_guidance", "must be in [0, 20]"),
        (prime, form(seed="x"), "seed", "must be a whole number"),
        (prime, form(format="mp4"), "format", "use one of wav, flac"),
        ({}, form(), "prime", "mode primed needs prime"),
        (
            {"prime": ("x.wav", b"RIFF....not audio", "audio/wav")},
            form(),
            "prime",
            "cannot read the uploaded audio",
        ),
    ]
    for files, data, field, words in cases:
        response = httpx.post(url, headers=keyed(), files=files, data=data, timeout=60)
        assert response.status_code == 400, (field, response.text)
        error = error_of(response)
        assert error["status"] == "INVALID_ARGUMENT" and error["field"] == field
        assert error["message"].startswith(f"{field}: ") and words in error["message"], error


def raw_request(address: str, head: str) -> tuple[int, float]:
    """Send only a request's head (no body) over a plain socket; the status the server
    answers with, and how long it took."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode())
        status = s.recv(4096).split(b" ", 2)[1]
    return int(status), time.perf_counter() - started


def test_the_key_is_checked_before_the_body_is_read(server):
    """A request that declares a 10 GB body and sends none: without a key it gets 401 at
    once (the body is never awaited); with a key, 413 at once (too large to read)."""
    head = (
        "POST /v1/continuations HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 10000000000\r\n{key}\r\n"
    )
    assert raw_request(server.url, head.format(key=""))[0] == 401
    assert raw_request(server.url, head.format(key=f"x-api-key: {BOB[:-1]}x\r\n"))[0] == 401
    status, seconds = raw_request(server.url, head.format(key=f"Authorization: Bearer {BOB}\r\n"))
    assert status == 413 and seconds < 10
    # Bytes that are no multipart body: 401 without a key (never parsed), 400 with one.
    junk = {"content-type": "multipart/form-data; boundary=zz"}
    url = f"{server.url}/v1/continuations"
    denied = httpx.post(url, content=b"\x00garbage" * 100, headers=junk)
    assert denied.status_code == 401 and error_of(denied)["status"] == "UNAUTHENTICATED"
    assert httpx.post(url, content=b"\x00garbage" * 100, headers={**junk, **keyed()}).status_code == 400


def test_a_body_beyond_the_limit_is_413_also_when_chunked(server):
    url = f"{server.url}/v1/continuations"
    big = {"prime": ("big.wav", b"\x00" * (MAX_REQUEST_BYTES + 1), "audio/wav")}
    response = httpx.post(url, headers=keyed(), files=big, data=form(), timeout=60)
    assert response.status_code == 413 and "limit" in error_of(response)["message"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b"--b\r\nContent-Disposition: form-data; name=prime; filename=x.wav\r\n\r\n"
        for _ in range(2 * MAX_REQUEST_BYTES // 65536):
            yield b"\x00" * 65536

    headers = {**keyed(), "content-type": "multipart/form-data; boundary=b"}
    assert httpx.post(url, headers=headers, content=chunks(), timeout=60).status_code == 413


def test_a_second_continuation_at_once_is_429_and_a_hang_up_frees_the_slot(server, tone):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    url = f"{server.url}/v1/continuations"
    with httpx.stream("POST", url, headers=keyed(), files=files, data=form(600.0), timeout=120) as long:
        assert long.status_code == 200
        audio = long.iter_raw()  # kept: a dropped iterator closes the connection
        next(audio)  # generating: it holds the only slot
        busy = httpx.post(url, headers=keyed(), files=files, data=form(), timeout=60)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
        assert error_of(busy)["status"] == "RESOURCE_EXHAUSTED"
    # The client hung up: generation stops and the slot is free again.
    deadline = time.monotonic() + 30
    while (
        again := httpx.post(url, headers=keyed(), files=files, data=form(), timeout=60)
    ).status_code == 429:
        assert time.monotonic() < deadline, "the hung-up stream kept its slot"
        time.sleep(0.2)
    assert again.status_code == 200


# ---- jobs -----------------------------------------------------------------------------------


def wait_for_job(server, job_id: str, key: str = ALICE, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=keyed(key)).json()["job"]
        if job["state"] in ("succeeded", "failed", "cancelled", "dead"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_job_lifecycle_tenancy_and_idempotency(server, tone):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    url = f"{server.url}/v1/jobs"
    data = form(0.5, idempotency_key="batch-7/a", priority="high")
    created = httpx.post(url, headers=keyed(), files=files, data=data, timeout=60)
    assert created.status_code == 201, created.text
    reply = created.json()
    job_id, seed = reply["job"]["job_id"], reply["seed"]
    assert reply["created"] and created.headers["location"] == f"/v1/jobs/{job_id}"
    # A retry with the same idempotency key is the same job, even without a seed (the
    # seed is drawn from the key); the key with another request is a conflict.
    again = httpx.post(url, headers=keyed(), files=files, data=data, timeout=60)
    assert (
        again.status_code == 200 and again.json()["job"]["job_id"] == job_id and again.json()["seed"] == seed
    )
    other = httpx.post(url, headers=keyed(), files=files, data={**data, "seconds": "0.6"}, timeout=60)
    assert other.status_code == 409 and error_of(other)["status"] == "ALREADY_EXISTS"
    # Another tenant: the job does not exist for it, whatever it does.
    for method, path in (("GET", ""), ("GET", "/audio"), ("DELETE", "")):
        response = httpx.request(method, f"{url}/{job_id}{path}", headers=keyed(BOB))
        assert response.status_code == 404 and error_of(response)["status"] == "NOT_FOUND"
    assert httpx.get(f"{url}/{job_id}").status_code == 401
    assert httpx.get(f"{url}/no-such-job", headers=keyed()).status_code == 404

    job = wait_for_job(server, job_id)
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["priority"] == "high"
    audio = httpx.get(f"{url}/{job_id}/audio", headers=keyed())
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert sf.info(io.BytesIO(audio.content)).frames == 8000
    flac = httpx.get(f"{url}/{job_id}/audio", params={"format": "flac"}, headers=keyed())
    assert flac.headers["content-type"] == "audio/flac" and sf.info(io.BytesIO(flac.content)).frames == 8000
    listed = httpx.get(url, params={"state": "succeeded"}, headers=keyed()).json()
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    assert job_id not in [j["job_id"] for j in httpx.get(url, headers=keyed(BOB)).json()["jobs"]]


def test_a_job_is_cancelled_with_delete(server, tone):
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    url = f"{server.url}/v1/jobs"
    job_id = httpx.post(url, headers=keyed(BOB), files=files, data=form(120.0), timeout=60).json()["job"][
        "job_id"
    ]
    cancelled = httpx.delete(f"{url}/{job_id}", headers=keyed(BOB))
    assert cancelled.status_code == 200 and cancelled.json()["job"]["cancel_requested"]
    assert wait_for_job(server, job_id, BOB)["state"] == "cancelled"
    result = httpx.get(f"{url}/{job_id}/audio", headers=keyed(BOB))
    assert result.status_code == 409 and error_of(result)["status"] == "FAILED_PRECONDITION"


# ---- health, metrics, the page ----------------------------------------------------------------


def test_health_metrics_and_the_page(server, tone):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "serving"}
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    assert httpx.get(f"{server.url}/nowhere").status_code == 404
    assert httpx.post(f"{server.url}/v1/continuations").status_code == 401  # no key
    files = {"prime": ("prime.wav", prime_bytes(tone), "audio/wav")}
    reply = httpx.post(
        f"{server.url}/v1/continuations", headers=keyed(), files=files, data=form(), timeout=120
    )
    assert reply.status_code == 200
    metrics = re.sub(r',model="[^"]*"', "", httpx.get(f"http://{server.metrics}/metrics").text)
    assert 'tokgen_http_requests_total{code="200",method="GET",route="/healthz"}' in metrics
    assert 'tokgen_http_requests_total{code="401",method="POST",route="/v1/continuations"}' in metrics
    assert 'tokgen_http_requests_total{code="404",method="GET",route="unmatched"}' in metrics
    count = next(
        line for line in metrics.splitlines() if line.startswith("tokgen_time_to_first_audio_seconds_count")
    )
    assert float(count.split()[-1]) >= 1  # the HTTP continuations, through the same servicer


def test_the_http_port_speaks_tls_and_mutual_tls_from_the_grpc_ports_files(pki):  # noqa: F811
    """No models needed: /healthz answers (503, still loading) once the handshake is done."""

    async def healthz(tls: TlsFiles, scheme: str = "https", client_cert: bool = False) -> int:
        server = HttpServer(HttpApi(TokgenServicer(1 << 20, Admission(1, 0)), None), "127.0.0.1", 0, tls)
        await server.start()
        try:
            trust = ssl.create_default_context(cafile=str(pki["ca"]))
            if client_cert:
                trust.load_cert_chain(pki["client_cert"], pki["client_key"])
            async with httpx.AsyncClient(verify=trust, timeout=10) as client:
                return (await client.get(f"{scheme}://127.0.0.1:{server.port}/healthz")).status_code
        finally:
            await server.stop(1)

    tls = TlsFiles(pki["server_cert"], pki["server_key"])
    assert asyncio.run(healthz(tls)) == 503
    with pytest.raises(httpx.TransportError):
        asyncio.run(healthz(tls, scheme="http"))  # plaintext to the TLS port
    mutual = TlsFiles(pki["server_cert"], pki["server_key"], pki["ca"])
    assert asyncio.run(healthz(mutual, client_cert=True)) == 503
    with pytest.raises(httpx.TransportError):
        asyncio.run(healthz(mutual))  # no client certificate


def chromium():
    """A headless Chromium through Debian's chromedriver (scripts/install.sh installs both);
    skipped only where they are not installed."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (scripts/install.sh installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(arg)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def test_the_page_streams_a_continuation_in_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    try:
        browser.get(f"{server.url}/")
        browser.find_element(By.ID, "key").send_keys(ALICE)
        browser.find_element(By.ID, "prime").send_keys(str(PRIME))
        for name, value in (("seconds", "2"), ("seed", "3"), ("sample_rate", "24000")):
            field = browser.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        browser.find_element(By.ID, "generate").click()
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 180, 0.2).until(lambda _: status.text.startswith(("Done", "Failed", "4", "5")))
        assert status.text.startswith("Done: 2.00 s of audio"), status.text
        assert "seed 3" in status.text and "at 24000 Hz" in status.text  # the output rate asked for
        # The player holds the continuation and plays it.
        player = browser.find_element(By.ID, "player")
        WebDriverWait(browser, 30).until(lambda _: int(player.get_property("readyState")) >= 2)
        assert player.get_property("duration") == pytest.approx(2.0, abs=0.01)
        played = browser.execute_async_script(
            "const [player, done] = arguments;"
            "const later = () => setTimeout(() => done(player.currentTime), 800);"
            "player.play().then(later, e => done(String(e)));",
            player,
        )
        assert isinstance(played, float) and played > 0, played
        # The spectrogram: every column drawn, prime | continuation, not a blank canvas.
        canvas = browser.find_element(By.ID, "spectrogram")
        assert canvas.get_attribute("data-columns") == "960"
        colours = browser.execute_script(
            "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "const seen = new Set();"
            "for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);"
            "return seen.size;",
            canvas,
        )
        assert colours > 20
        assert "last 10.0 s" in browser.find_element(By.ID, "legend-prime").text  # of a 12 s prime
        browser.save_screenshot(str(tmp_path / "page.png"))
        # No policy violation or error in the page's console.
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        browser.quit()
