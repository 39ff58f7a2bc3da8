"""A worker: claims jobs from the queue and renders up to N of them at once through one set
of engines (so they batch), renewing their leases, reporting progress and saving codes as
it goes so that a re-run after a crash resumes instead of starting over.

A render is the ``Generator``'s: the queue holds the job the server prepared (a
``QueuedJob``: validated, prime encoded); if an earlier attempt saved codes, every level
starts from what it saved (the longest gap-free prefix of each level; the sampler
completes and extends them); the result is the new audio (WAV, exactly the seconds asked
for, at the sample rate and loudness asked for) and every level's codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import time
import uuid

import numpy as np
import soundfile as sf
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokgen.codec.codes import dump_codes, load_codes
from tokgen.generation.generate import Job, level_tokens, whole_top_frames
from tokgen.generation.generator import Generator
from tokgen.generation.output import finish_audio
from tokgen.generation.queued import QueuedJob, QueuedJobError
from tokgen.generation.sampler import CodeBoard
from tokgen.jobs.queue import Claim, JobQueue
from tokgen.jobs.states import InvalidTransition
from tokgen.monitoring import metrics

log = logging.getLogger(__name__)


def resume_from(job: Job, saved: list[np.ndarray], hops: list[int]) -> Job:
    """``job`` with each level's known codes replaced by what an earlier attempt saved
    (cut back to whole top frames), where that is longer (saved codes start with the
    job's own known codes)."""
    saved = whole_top_frames(saved, hops)
    known = [s if s.size > k.size else k for k, s in zip(job.known, saved, strict=True)]
    return dataclasses.replace(job, known=known)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        generator: Generator,
        name: str | None = None,
        concurrency: int = 4,
        save_every_s: float = 1.0,
    ):
        self.queue, self.generator, self.codec = queue, generator, generator.codec
        self.name = name or f"worker-{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.save_every_s = save_every_s
        self.running: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event, poll_s: float = 0.2, grace_s: float = 10.0) -> None:
        """Claim and render until ``stop``; then claim nothing more, give running jobs
        ``grace_s`` to finish and release the others to the queue."""
        outage = 0.0
        metrics.WORKER_SLOTS.set(self.concurrency)
        while not stop.is_set():
            try:
                free = self.concurrency - len(self.running)
                if free > 0:
                    for claim in await self.queue.claim(self.name, free):
                        task = asyncio.create_task(self._run_claim(claim))
                        self.running.add(task)
                        task.add_done_callback(self.running.discard)
                outage = 0.0
            except (RedisConnectionError, RedisTimeoutError) as exc:  # beyond the client's own retries
                outage = min(5.0, max(0.5, outage * 2))
                log.warning("redis unreachable (%s); retrying in %.1f s", exc, outage)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), outage or poll_s)
        metrics.WORKER_SLOTS.set(0)
        if self.running:
            await asyncio.wait(set(self.running), timeout=grace_s)
        tasks = list(self.running)
        for task in tasks:
            task.cancel()  # _run_claim releases its job
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_claim(self, claim: Claim) -> None:
        started = time.monotonic()
        if claim.taken_over:
            metrics.LEASES_RECLAIMED.inc()
        if claim.waited_s is not None:
            metrics.JOB_QUEUE_WAIT.labels(claim.job.priority).observe(claim.waited_s)
        metrics.LEASES_HELD.inc()
        try:
            await self._attempt(claim)
        finally:
            metrics.LEASES_HELD.dec()
            metrics.JOB_RUN_SECONDS.observe(time.monotonic() - started)

    async def _attempt(self, claim: Claim) -> None:
        render = asyncio.create_task(self.render(claim))
        beat = asyncio.create_task(self._heartbeat(claim))
        try:
            await asyncio.wait({render, beat}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # shutdown, past the grace period: hand the job back
            render.cancel()
            beat.cancel()
            await asyncio.gather(render, beat, return_exceptions=True)
            await self._settle(self.queue.release(claim, self.name))
            raise
        if beat.done():  # the user cancelled it, or the attempt is no longer ours
            render.cancel()
            await asyncio.gather(render, return_exceptions=True)
            if beat.result() == "cancelled":
                await self._settle(self.queue.cancelled(claim, self.name))
            else:
                metrics.LEASES_LOST.inc()
            return
        beat.cancel()
        try:
            audio, codes, summary = render.result()
        except QueuedJobError as exc:  # the job itself is unreadable: retrying cannot help
            await self._settle(self.queue.fail(claim, self.name, str(exc), retryable=False))
        except Exception as exc:
            log.exception("job %s failed", claim.job.id)
            await self._settle(self.queue.fail(claim, self.name, f"{type(exc).__name__}: {exc}", True))
        else:
            await self._settle(self.queue.succeed(claim, self.name, audio, codes, json.dumps(summary)))

    @staticmethod
    async def _settle(change) -> None:
        """Apply a final state change; if the attempt stopped being ours meanwhile (lease
        taken over), the other worker's attempt decides: drop ours."""
        try:
            job = await change
        except InvalidTransition as exc:
            log.warning("dropped a stale attempt: %s", exc)
            job = None
        metrics.JOB_OUTCOMES.labels(job.state.value if job is not None else "stale").inc()

    async def _heartbeat(self, claim: Claim) -> str:
        """Renew the lease every third of it; return (so the render stops) once the job was
        cancelled or the attempt is no longer ours."""
        period = self.queue.config.lease_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                job = await self.queue.heartbeat(claim, self.name)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("heartbeat of job %s failed (%s); rendering on", claim.job.id, exc)
                continue
            if job is None or job.cancel_requested:
                return "lost" if job is None else "cancelled"

    async def render(self, claim: Claim) -> tuple[bytes, bytes, dict]:
        started = time.monotonic()
        queued = QueuedJob.loads(claim.request)
        job = queued.job
        sr, hops = self.codec.sample_rate, [lv.hop for lv in self.codec.levels]
        saved = await self.queue.load_partial(claim.job.id)
        # Progress is over the whole render, what earlier attempts made included.
        before, whole = [k.size for k in job.known], level_tokens(self.codec, job)
        resumed = [0] * len(job.known)
        if saved is not None:
            job = resume_from(job, load_codes(saved).codes, hops)
            resumed = [k.size - b for k, b in zip(job.known, before, strict=True)]
        num_samples = job.top_frames * hops[0]
        totals = level_tokens(self.codec, job)
        last = {"saved": time.monotonic()}
        pending: set[asyncio.Task] = set()

        def watch(board: CodeBoard, level: int) -> None:
            # One save in flight at a time: snapshots are cumulative, so a skipped one loses
            # nothing, while overlapping ones pile up connections on a slow Redis (or CPU)
            # and could land out of order, an older snapshot over a newer one.
            now = time.monotonic()
            if not pending and now - last["saved"] >= self.save_every_s:
                last["saved"] = now
                prefixes = [board.codes[lv][: board.prefix_frames(lv)] for lv in range(len(hops))]
                done = [(board.known_frames[lv] - before[lv]) / w if w else 1.0 for lv, w in enumerate(whole)]
                fraction = sum(d * w for d, w in zip(done, whole, strict=True)) / max(1, sum(whole))
                task = asyncio.create_task(self._save(claim, prefixes, num_samples, fraction, tuple(done)))
                pending.add(task)
                task.add_done_callback(pending.discard)

        result = await self.generator.render(job, queued.settings, claim.job.id, watch)
        for task in list(pending):
            task.cancel()
        rate = queued.output.rate(sr)
        audio = await asyncio.to_thread(finish_audio, result.new_audio(queued.samples), sr, queued.output)
        seconds = audio.size / rate
        metrics.AUDIO_SECONDS.labels("job").inc(seconds)
        metrics.REALTIME_FACTOR.labels("job").observe(seconds / (time.monotonic() - started))
        summary = {
            "tokens": totals,
            "resumed_frames": resumed,
            "attempt": claim.job.attempts,
        }
        return (
            wav_bytes(audio, rate),
            dump_codes(result.codes, self.codec, num_samples, job.reference),
            summary,
        )

    async def _save(
        self,
        claim: Claim,
        prefixes: list[np.ndarray],
        num_samples: int,
        fraction: float,
        levels: tuple[float, ...],
    ) -> None:
        data = await asyncio.to_thread(dump_codes, prefixes, self.codec, num_samples)
        try:
            await self.queue.save_partial(claim, data)
            await self.queue.report_progress(claim, self.name, fraction, levels)
        except (RedisConnectionError, RedisTimeoutError, InvalidTransition) as exc:
            log.warning("progress of job %s not saved: %s", claim.job.id, exc)  # the next save may
