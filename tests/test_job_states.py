"""The job state rules (pure functions)."""

from __future__ import annotations

import pytest

from tokgen.jobs.states import (
    InvalidTransition,
    JobState,
    RetryPolicy,
    cancel,
    cancelled,
    fail,
    progressed,
    read_order,
    released,
    start,
    submitted,
    succeed,
)

POLICY = RetryPolicy(max_attempts=3, backoff_s=2.0, max_backoff_s=5.0)


def test_a_job_runs_and_succeeds():
    job = start(submitted("j1", "normal", now=1.0), "w1", now=2.0)
    assert (job.state, job.attempts, job.worker) == (JobState.RUNNING, 1, "w1")
    job = progressed(job, "w1", 0.5, (1.0, 0.5, 0.0), now=3.0)
    assert job.progress == 0.5 and job.level_progress == (1.0, 0.5, 0.0)
    job = succeed(job, "w1", now=4.0)
    assert job.state == JobState.SUCCEEDED and job.state.final and job.progress == 1.0 and job.worker is None
    assert [h.split("@")[0] for h in job.history] == ["queued", "running", "succeeded"]
    with pytest.raises(InvalidTransition):
        start(job, "w2", now=5.0)


def test_only_the_worker_of_the_current_attempt_may_report():
    job = start(submitted("j1", "normal", 0.0), "w1", 1.0)
    for report in (lambda: succeed(job, "w2", 2.0), lambda: progressed(job, "w2", 0.1, (), 2.0)):
        with pytest.raises(InvalidTransition, match="run by w1"):
            report()


def test_retryable_failures_back_off_exponentially_then_the_job_is_dead():
    job = submitted("j1", "low", 0.0)
    waits = []
    for attempt in range(1, 4):
        job = start(job, "w1", now=10.0 * attempt)
        job = fail(job, "w1", f"boom {attempt}", retryable=True, policy=POLICY, now=10.0 * attempt)
        waits.append(job.not_before - 10.0 * attempt if job.state == JobState.QUEUED else None)
    assert waits == [2.0, 4.0, None] and job.state == JobState.DEAD and job.error == "boom 3"
    assert POLICY.backoff(10) == 5.0  # capped


def test_a_worker_lost_before_saving_progress_counts_as_a_failed_attempt():
    """A job that kills its worker before it saves anything (a poison job) dies."""
    job = submitted("j1", "normal", 0.0)
    for attempt in range(1, 4):
        job = start(job, f"w{attempt}", 10.0 * attempt)
        job = fail(job, None, "worker lost its lease", retryable=True, policy=POLICY, now=10.0 * attempt + 1)
        assert (job.attempts, job.failures) == (attempt, attempt)
    assert job.state == JobState.DEAD


def test_a_worker_lost_after_saving_progress_is_not_held_against_the_job():
    job = start(submitted("j1", "normal", 0.0), "w1", 1.0)
    job = progressed(job, "w1", 0.3, (1.0, 0.2), 2.0)
    job = fail(job, None, "worker w1 lost its lease", retryable=True, policy=POLICY, now=3.0)
    assert (job.state, job.attempts, job.failures, job.worker) == (JobState.QUEUED, 1, 0, None)
    job = start(job, "w2", 4.0)  # resumes from what w1 saved; w2 itself saves nothing
    assert not job.attempt_saved
    job = fail(job, None, "worker w2 lost its lease", retryable=True, policy=POLICY, now=5.0)
    assert (job.state, job.failures) == (JobState.QUEUED, 1)


def test_starts_are_bounded_even_when_every_lost_attempt_made_progress():
    policy = RetryPolicy(max_attempts=3, max_starts=5)
    job = submitted("j1", "normal", 0.0)
    for attempt in range(1, 6):
        job = progressed(start(job, f"w{attempt}", attempt), f"w{attempt}", attempt / 10, (), attempt)
        job = fail(job, None, "lost", retryable=True, policy=policy, now=attempt + 0.5)
    assert job.state == JobState.DEAD and (job.attempts, job.failures) == (5, 0)


def test_a_worker_shutting_down_hands_the_job_back_without_a_failure():
    job = released(start(submitted("j1", "normal", 0.0), "w1", 1.0), "w1", 2.0)
    assert (job.state, job.attempts, job.failures, job.not_before) == (JobState.QUEUED, 1, 0, 2.0)


def test_a_failure_retrying_cannot_fix_fails_at_once():
    job = start(submitted("j1", "normal", 0.0), "w1", 1.0)
    job = fail(job, "w1", "prime_audio: corrupt", retryable=False, policy=POLICY, now=2.0)
    assert job.state == JobState.FAILED and job.attempts == 1


def test_cancel_queued_never_starts_and_cancel_running_is_finished_by_its_worker():
    queued = cancel(submitted("j1", "normal", 0.0), 1.0)
    assert queued.state == JobState.CANCELLED
    with pytest.raises(InvalidTransition):
        start(queued, "w1", 2.0)
    assert cancel(queued, 3.0) == queued  # idempotent on final states
    running = cancel(start(submitted("j2", "normal", 0.0), "w1", 1.0), 2.0)
    assert running.state == JobState.RUNNING and running.cancel_requested
    assert cancelled(running, "w1", 3.0).state == JobState.CANCELLED
    # a cancelled job that then fails is cancelled, not retried
    assert fail(running, "w1", "aborted", True, POLICY, 3.0).state == JobState.CANCELLED
    with pytest.raises(InvalidTransition, match="not cancelled"):
        cancelled(start(submitted("j3", "normal", 0.0), "w1", 1.0), "w1", 2.0)


def test_read_order_serves_high_first_without_starving_low():
    orders = [read_order(turn) for turn in range(7)]
    assert all(set(o) == {"high", "normal", "low"} for o in orders)
    firsts = [o[0] for o in orders]
    assert firsts.count("high") == 4 and firsts.count("normal") == 2 and firsts.count("low") == 1
    assert read_order(7) == read_order(0)
