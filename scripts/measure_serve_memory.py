"""Peak memory of a real ``tokgen serve`` under hostile and heavy requests (issue 17,
docs/RELIABILITY.md "Limits"): the shipped models, the hf engine, API keys on, no worker.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_serve_memory.py [--dir DIR]

Steps, in order (the peak only grows; each line says how far this step raised it):
ready (a warm-up continuation streamed); the four bombs of issue 17 with a valid key (the
codes file declaring a 100-million-character name and the 655 kHz x 8 FLAC, each to
Continue and to SubmitJob); 20 requests of 60 MiB garbage without a key (refused before
parsing); one SubmitJob with a 60 s 48 kHz stereo prime, then 8 such at once (two
prepare at a time). Peak RSS is the server process's ``VmHWM`` (/proc/PID/status). The bombs are built
by ``scripts/measure_hostile_inputs.py``'s builders into DIR."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from measure_hostile_inputs import build_codes_bomb, build_flac_bomb  # noqa: E402

from tokgen.v1 import jobs_pb2 as jpb  # noqa: E402
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc  # noqa: E402
from tokgen.v1 import tokgen_pb2 as pb  # noqa: E402
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc  # noqa: E402

KEY = "measure-key-0123456789abcdef"


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def code_of(call) -> str:
    try:
        reply = call()
        if hasattr(reply, "__next__"):
            list(reply)
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "tokgen-hostile")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    bombs = {"codes": args.dir / "model-bomb.npz", "flac": args.dir / "flac-bomb.flac"}
    if not bombs["codes"].exists():
        build_codes_bomb(bombs["codes"])
    if not bombs["flac"].exists():
        build_flac_bomb(bombs["flac"])
    cmd = [sys.executable, "-m", "tokgen", "serve", "--port", "0", "--metrics-port", "0"]
    cmd += ["--backend", "hf", "--no-worker"]
    env = {**os.environ, "TOKGEN_CACHE_DIR": str(args.dir / "cache"), "TOKGEN_API_KEYS": KEY}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        where = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        channel = grpc.insecure_channel(where["listening"], options=[("grpc.max_send_message_length", -1)])
        stub, jobs = pb_grpc.TokgenServiceStub(channel), jpb_grpc.JobServiceStub(channel)
        good = (("x-api-key", KEY),)
        deadline = time.monotonic() + 300
        while code_of(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=good, timeout=5)) != "OK":
            assert time.monotonic() < deadline and proc.poll() is None, "the server never became ready"
            time.sleep(0.5)
        warm = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=1.0)
        assert code_of(lambda: stub.Continue(warm, metadata=good, timeout=120)) == "OK"
        last = status_mib(proc.pid, "VmHWM")

        def report(step: str, codes: list[str]) -> None:
            nonlocal last
            peak = status_mib(proc.pid, "VmHWM")
            print(
                json.dumps(
                    {
                        "step": step,
                        "codes": sorted(set(codes)),
                        "peak_rss_mib": round(peak, 1),
                        "peak_growth_mib": round(peak - last, 1),
                        "rss_mib": round(status_mib(proc.pid, "VmRSS"), 1),
                    }
                ),
                flush=True,
            )
            last = peak

        report("ready (warm-up continuation streamed)", ["OK"])
        codes_bomb, flac_bomb = bombs["codes"].read_bytes(), bombs["flac"].read_bytes()
        requests = [
            pb.ContinueRequest(mode=pb.MODE_CONTINUE, seconds=1, codes=codes_bomb),
            pb.ContinueRequest(prime_audio=flac_bomb, seconds=1),
        ]
        codes = [code_of(lambda r=r: stub.Continue(r, metadata=good, timeout=60)) for r in requests]
        codes += [
            code_of(lambda r=r: jobs.SubmitJob(jpb.SubmitJobRequest(request=r), metadata=good, timeout=60))
            for r in requests
        ]
        report("the four bombs of issue 17, with a valid key", codes)
        garbage = np.random.default_rng(0).bytes(60 << 20)
        raw = channel.unary_unary("/tokgen.v1.JobService/SubmitJob")
        report(
            "60 MiB of garbage x 20, no key", [code_of(lambda: raw(garbage, timeout=60)) for _ in range(20)]
        )
        noise = np.random.default_rng(1).standard_normal((60 * 48000, 2)).astype(np.float32) * 0.1
        buf = io.BytesIO()
        sf.write(buf, noise, 48000, format="WAV", subtype="PCM_16")
        big = jpb.SubmitJobRequest(request=pb.ContinueRequest(prime_audio=buf.getvalue(), seconds=1))
        report(
            "1 SubmitJob, a 60 s 48 kHz stereo prime",
            [code_of(lambda: jobs.SubmitJob(big, metadata=good, timeout=300))],
        )
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda _: code_of(lambda: jobs.SubmitJob(big, metadata=good, timeout=300)), range(8))
            )
        report("8 SubmitJobs at once, 60 s 48 kHz stereo primes (11.5 MB WAV each)", codes)
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()


if __name__ == "__main__":
    main()
