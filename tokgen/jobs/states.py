"""The life of a batch job, as pure functions (the Redis queue applies them atomically).

    queued -> running -> succeeded
                      -> queued (a retryable failure or a lost worker, with attempts left:
                                 after an exponential backoff; a worker shutting down
                                 hands its jobs back at once)
                      -> failed (a failure retrying cannot fix, e.g. a corrupt prime)
                      -> dead   (out of attempts: moved to the dead-letter stream)

What counts against ``max_attempts`` is failures, not starts: an attempt handed back by
a worker shutting down, or lost with its worker after it had saved progress (the next
attempt resumes from there), is no evidence against the job. A job that kills its
worker before saving anything (a poison job) still dies after ``max_attempts``, and
``max_starts`` bounds a job that keeps losing workers however far it gets.
    queued -> cancelled (never starts)
    running -> cancelled (a cancel request aborts its engine requests)

Every function returns a new record or raises ``InvalidTransition``; none has side effects,
so the rules are tested without Redis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tokgen.generation.spec import Priority

PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
# The owner of every job when the server has no API keys (one tenant); with keys, a job's
# owner is the id of the key that submitted it (``serve.auth.key_id``, never the key).
ANONYMOUS = "anonymous"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DEAD)


class InvalidTransition(Exception):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # failed attempts (see the module docstring)
    max_starts: int = 20  # attempts of any kind
    backoff_s: float = 2.0  # before the 2nd attempt; doubles each time
    max_backoff_s: float = 300.0

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts before the next one."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Job:
    id: str
    priority: Priority
    state: JobState = JobState.QUEUED
    attempts: int = 0  # attempts started so far
    failures: int = 0  # attempts that count against max_attempts
    attempt_saved: bool = False  # the current attempt has saved codes a next one resumes from
    created_at: float = 0.0
    updated_at: float = 0.0
    not_before: float = 0.0  # a retry waits until then
    worker: str | None = None  # the worker running the current attempt
    cancel_requested: bool = False
    progress: float = 0.0  # 0..1 over all levels' tokens
    level_progress: tuple[float, ...] = ()
    error: str | None = None  # the last attempt's error
    history: tuple[str, ...] = field(default=())  # "state@time" per transition, for debugging
    owner: str = ANONYMOUS  # who may see it: the submitting API key's id
    seed: int | None = None  # what it renders with (None: a record from before seeds were kept)


def _to(job: Job, state: JobState, now: float, **changes: Any) -> Job:
    return dataclasses.replace(
        job, state=state, updated_at=now, history=(*job.history, f"{state}@{now:.3f}"), **changes
    )


def _require(job: Job, *states: JobState) -> None:
    if job.state not in states:
        allowed = " or ".join(s.value for s in states)
        raise InvalidTransition(f"job {job.id} is {job.state.value}, not {allowed}")


def submitted(
    job_id: str, priority: Priority, now: float, owner: str = ANONYMOUS, seed: int | None = None
) -> Job:
    history = (f"queued@{now:.3f}",)
    return Job(job_id, priority, created_at=now, updated_at=now, history=history, owner=owner, seed=seed)


def start(job: Job, worker: str, now: float) -> Job:
    """A worker takes the job: a new attempt."""
    _require(job, JobState.QUEUED)
    if job.cancel_requested:
        raise InvalidTransition(f"job {job.id} was cancelled")
    return _to(
        job,
        JobState.RUNNING,
        now,
        attempts=job.attempts + 1,
        worker=worker,
        error=None,
        attempt_saved=False,
    )


def progressed(job: Job, worker: str, fraction: float, levels: tuple[float, ...], now: float) -> Job:
    _require(job, JobState.RUNNING)
    _require_owner(job, worker)
    return dataclasses.replace(
        job, progress=fraction, level_progress=levels, updated_at=now, attempt_saved=True
    )


def succeed(job: Job, worker: str, now: float) -> Job:
    _require(job, JobState.RUNNING)
    _require_owner(job, worker)
    return _to(job, JobState.SUCCEEDED, now, progress=1.0, worker=None)


def fail(job: Job, worker: str | None, error: str, retryable: bool, policy: RetryPolicy, now: float) -> Job:
    """The current attempt failed (``worker`` None: its worker was lost, found by lease
    expiry). A retryable failure with attempts left queues the job again after a backoff;
    a lost attempt that had saved progress does not count as a failure."""
    _require(job, JobState.RUNNING)
    if worker is not None:
        _require_owner(job, worker)
    if job.cancel_requested:
        return _to(job, JobState.CANCELLED, now, worker=None, error=error)
    if not retryable:
        return _to(job, JobState.FAILED, now, worker=None, error=error)
    lost_after_progress = worker is None and job.attempt_saved
    failures = job.failures + (0 if lost_after_progress else 1)
    if failures >= policy.max_attempts or job.attempts >= policy.max_starts:
        return _to(job, JobState.DEAD, now, worker=None, error=error, failures=failures)
    return _to(
        job,
        JobState.QUEUED,
        now,
        worker=None,
        error=error,
        failures=failures,
        not_before=now + policy.backoff(failures),
    )


def released(job: Job, worker: str, now: float) -> Job:
    """The worker shuts down before the job is done: queued again for another worker, at
    once (not a failure; its saved codes let the next attempt resume)."""
    _require(job, JobState.RUNNING)
    _require_owner(job, worker)
    if job.cancel_requested:
        return _to(job, JobState.CANCELLED, now, worker=None)
    return _to(job, JobState.QUEUED, now, worker=None, not_before=now, error=f"released by {worker}")


def cancel(job: Job, now: float) -> Job:
    """Queued: cancelled at once. Running: marked; its worker aborts it and calls
    ``cancelled``. Final: unchanged (cancelling twice is harmless)."""
    if job.state.final:
        return job
    if job.state == JobState.QUEUED:
        return _to(job, JobState.CANCELLED, now, cancel_requested=True)
    return dataclasses.replace(job, cancel_requested=True, updated_at=now)


def cancelled(job: Job, worker: str, now: float) -> Job:
    """The worker stopped a running job whose cancellation was requested."""
    _require(job, JobState.RUNNING)
    _require_owner(job, worker)
    if not job.cancel_requested:
        raise InvalidTransition(f"job {job.id} was not cancelled")
    return _to(job, JobState.CANCELLED, now, worker=None)


def _require_owner(job: Job, worker: str) -> None:
    if job.worker != worker:
        raise InvalidTransition(f"job {job.id} is run by {job.worker}, not {worker}")


def read_order(turn: int, weights: tuple[int, ...] = (4, 2, 1)) -> tuple[Priority, ...]:
    """The order in which a worker looks at the priority streams on its ``turn``-th read:
    high first on 4 turns of 7, normal first on 2, low first on 1. Alone, each priority is
    served at once; under a backlog of high jobs, low ones still get one read in seven."""
    cycle = [p for p, w in zip(PRIORITIES, weights, strict=True) for _ in range(w)]
    first = cycle[turn % len(cycle)]
    return (first, *(p for p in PRIORITIES if p != first))
