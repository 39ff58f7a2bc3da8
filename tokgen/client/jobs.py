"""``tokgen jobs submit|status|watch|cancel|list|fetch``: JobService from the command line.
Every subcommand prints JSON (one object; ``watch`` one per change) on stdout.

Results are fetched with StreamJobResult (``fetch_result``): a render of any length, in
messages under the 4 MiB a gRPC channel receives by default."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import grpc
import soundfile as sf

from tokgen.audio import encode_audio, output_format
from tokgen.client import AsyncTokgenClient, server_error
from tokgen.errors import ServerError
from tokgen.names import job_dict
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import jobs_pb2_grpc as jpb_grpc

Metadata = tuple[tuple[str, str], ...]


@dataclass
class JobResult:
    job: jpb.Job
    audio: bytes  # WAV
    codes: bytes  # .npz


@dataclass
class ResultReader:
    """StreamJobResult's replies put back together, and checked as they come: the header
    first and once, each chunk where its part has reached, no byte beyond the sizes the
    header announced, and (``result``) every byte announced. Feed it from a sync or an
    async call alike."""

    header: jpb.JobResultHeader | None = None
    parts: dict[str, bytearray] = field(default_factory=lambda: {"audio": bytearray(), "codes": bytearray()})

    def add(self, reply: jpb.StreamJobResultResponse) -> None:
        if reply.HasField("header") == (self.header is not None):
            self._broken("the header must come first, and once")
        if reply.HasField("header"):
            self.header = reply.header
            return
        chunk = reply.chunk
        part = chunk.WhichOneof("data")
        if part is None:
            self._broken("a chunk without data")
        got = self.parts[part]
        if chunk.offset != len(got):
            self._broken(f"{part} chunk at byte {chunk.offset}, expected {len(got)}")
        got += getattr(chunk, part)
        if len(got) > self._size(part):
            self._broken(f"{part} past the {self._size(part)} bytes announced")

    def result(self) -> JobResult:
        if self.header is None:
            self._broken("no header")
        for part, got in self.parts.items():
            if len(got) != self._size(part):
                self._broken(f"{len(got)} bytes of {part}, {self._size(part)} announced")
        return JobResult(self.header.job, bytes(self.parts["audio"]), bytes(self.parts["codes"]))

    def _size(self, part: str) -> int:
        assert self.header is not None
        return self.header.audio_size if part == "audio" else self.header.codes_size

    @staticmethod
    def _broken(what: str) -> NoReturn:
        raise ServerError(f"the server sent a broken result stream: {what}", "DATA_LOSS")


async def fetch_result(stub: jpb_grpc.JobServiceStub, job_id: str, metadata: Metadata = ()) -> JobResult:
    """A succeeded job's audio and codes, of any size (StreamJobResult), over any channel
    (one receiving at most 4 MiB a message too)."""
    reader = ResultReader()
    async for reply in stub.StreamJobResult(jpb.StreamJobResultRequest(job_id=job_id), metadata=metadata):
        reader.add(reply)
    return reader.result()


async def _run(args: argparse.Namespace, client: AsyncTokgenClient, request: Callable) -> None:
    stub, meta = client.jobs, client.metadata
    cmd = args.jobs_cmd
    if cmd == "submit":
        reply = await stub.SubmitJob(
            jpb.SubmitJobRequest(request=request(args), idempotency_key=args.idempotency_key or ""),
            metadata=meta,
        )
        print(json.dumps({"job_id": reply.job.job_id, "created": reply.created, **job_dict(reply.job)}))
    elif cmd == "status":
        print(
            json.dumps(
                job_dict((await stub.GetJob(jpb.GetJobRequest(job_id=args.job_id), metadata=meta)).job)
            )
        )
    elif cmd == "cancel":
        reply = await stub.CancelJob(jpb.CancelJobRequest(job_id=args.job_id), metadata=meta)
        print(json.dumps(job_dict(reply.job)))
    elif cmd == "watch":
        async for update in stub.WatchJob(jpb.WatchJobRequest(job_id=args.job_id), metadata=meta):
            print(json.dumps(job_dict(update.job)), flush=True)
    elif cmd == "list":
        state = (
            jpb.JobState.Value(f"JOB_STATE_{args.state.upper()}") if args.state else jpb.JOB_STATE_UNSPECIFIED
        )
        reply = await stub.ListJobs(
            jpb.ListJobsRequest(state=state, page_size=args.page_size, page_token=args.page_token),
            metadata=meta,
        )
        jobs = [job_dict(j) for j in reply.jobs]
        print(json.dumps({"jobs": jobs, "next_page_token": reply.next_page_token}))
    elif cmd == "fetch":
        out = Path(args.out)
        output_format(out)  # before the call: an unsupported extension fetches nothing
        result = await fetch_result(stub, args.job_id, meta)
        _write(out, result.audio if out.suffix.lower() == ".wav" else reencode(result.audio, out.suffix))
        if args.codes_out:
            _write(Path(args.codes_out), result.codes)
        print(json.dumps({"job_id": args.job_id, "out": args.out, "codes": args.codes_out}))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_jobs_command(
    args: argparse.Namespace, connect: Callable[[], AsyncTokgenClient], request: Callable
) -> None:
    async def main() -> None:
        async with connect() as client:  # its channel belongs to this event loop
            await _run(args, client, request)

    try:
        asyncio.run(main())
    except grpc.RpcError as err:
        raise server_error(err) from None


def reencode(wav: bytes, suffix: str) -> bytes:
    """A job's WAV result in the format of ``suffix`` (the output follows the extension)."""
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return encode_audio(audio, rate, suffix.lower())
