"""The batch job queue on Redis Streams consumer groups.

Keys (``P`` is the prefix in braces, default ``{tokgen}``: a Redis Cluster hash tag, so
every key hashes to one slot. The transactions below span a job's record, its indexes
and a stream; a cluster runs a transaction only within one slot):

- ``P:job:ID``       hash: ``record`` (the ``states.Job``, JSON, with its owner),
                     ``request`` (the prepared job, ``generation.queued``), ``idem`` (the
                     idempotency key it was submitted with, if any)
- ``P:jobs``         sorted set of job ids by submission time (listing all: operators)
- ``P:owner:O:jobs`` the same, of owner ``O``'s jobs only (listing one tenant's)
- ``P:state:S``, ``P:owner:O:state:S``  the same, of the jobs in state ``S`` now (kept
                     in the transaction of every state change: a filtered listing reads
                     only its own state's jobs)
- ``P:expiring``     sorted set of ``OWNER STATE ID`` by the time a finished job expires:
                     the index entries still to remove (trimmed on every submit and list)
- ``P:owner-salt``   a random secret, made once: owner ids are keyed hashes of API keys
- ``P:stream:PRIO``  one stream per priority; an entry ``{job: ID}`` per attempt to run
- ``P:delayed``      sorted set of job ids by retry time (backoff); due ones are re-added
- ``P:dead``         the dead-letter stream: ``{job, error}`` per job out of attempts (the
                     newest ``MAX_DEAD_LETTERS``)
- ``P:idem:O:KEY``   ``ID DIGEST``: the job owner ``O``'s idempotency key created, and the
                     digest of the request it was created for
- ``P:result:ID``    hash ``audio`` (WAV) and ``codes`` (.npz), expiring after the TTL
- ``P:partial:ID``   the codes a running attempt has made so far (.npz): a re-run resumes

Retention: when a job finishes (succeeded, failed, cancelled, dead) the transaction that
says so also drops its prepared request (the prime's codes), deletes its partial codes,
and sets its record and idempotency key to expire after ``retention_s`` (its result after
``result_ttl_s``, never later); ``trim`` then takes it out of the indexes.

Delivery is at least once: a worker reads an entry (XREADGROUP), holds it while it runs
and renews its lease by resetting the entry's idle time (XCLAIM JUSTID) every few
seconds. An entry idle for longer than the lease belongs to a lost worker and is taken
over (XAUTOCLAIM) by another. Results are visible exactly once: every state change is a
WATCH/MULTI transaction on the job's record that applies a ``states`` rule, and a worker
may only store a result while the record still names it as the attempt's worker.

Redis: one server (``redis://``, ``rediss://``, ``unix://``) or a Redis Cluster
(``redis+cluster://HOST:PORT``, ``rediss+cluster://``: any one node, the client finds the
others), managed ones included: every command and transaction names keys of the one
slot. The key layout changed in issue 19: keys were ``tokgen:...`` (no braces) before;
on one server ``open_queue`` renames keys of that layout (``adopt_unbraced_keys``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokgen.errors import TokgenError
from tokgen.jobs import states
from tokgen.jobs.redis_server import EmbeddedRedis
from tokgen.jobs.states import (
    ANONYMOUS,
    PRIORITIES,
    InvalidTransition,
    Job,
    JobState,
    Priority,
    RetryPolicy,
)
from tokgen.settings import redact_url

GROUP = "workers"
MAX_DEAD_LETTERS = 10_000  # the dead-letter stream keeps (about) this many newest entries
TRIM_BATCH = 1000  # expired jobs taken out of the indexes per trim
INDEX_VERSION = b"2"  # per-owner and per-state indexes, retention (upgrade_indexes)


log = logging.getLogger(__name__)

# tokgen's URL schemes for a Redis Cluster, and the scheme of one of its nodes
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Client = redis.Redis | RedisCluster


def cluster_node_url(url: str) -> str | None:
    """The node URL in a cluster URL (``redis+cluster://h:p`` -> ``redis://h:p``), None
    for the URL of one server."""
    scheme, sep, rest = url.partition("://")
    node = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return f"{node}://{rest}" if node is not None else None


def client_for(url: str, **options: Any) -> Client:
    """A client of the Redis at ``url``: of the whole cluster (its nodes discovered from
    the one named, commands routed by slot) for a cluster URL, else of one server."""
    node = cluster_node_url(url)
    if node is None:
        return redis.Redis.from_url(url, **options)
    return RedisCluster.from_url(node, **options)


def connect(url: str) -> Client:
    """A client that rides out a Redis restart (or a cluster failover): every command is
    retried on connection errors with exponential backoff (50 ms doubling to 1 s, about
    30 s in all)."""
    return client_for(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=30),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=10,
    )


def encode_job(job: Job) -> str:
    return json.dumps(asdict(job))


def decode_job(raw: bytes | str) -> Job:
    data = json.loads(raw)
    data["state"] = JobState(data["state"])
    data["level_progress"] = tuple(data["level_progress"])
    data["history"] = tuple(data["history"])
    return Job(**data)


class QueueFull(TokgenError):
    """No room for a submission: the queue's, or its owner's, unfinished jobs are at their limit."""


class IdempotencyConflict(TokgenError):
    """An idempotency key used again, by the same owner, for a different request."""

    def __init__(self, key: str, job_id: str):
        super().__init__(
            f"idempotency key {key[:64]!r} was used for a different request (job {job_id}); "
            "use a new key for a new request"
        )
        self.job_id = job_id


def claimed_entries(reply: list) -> tuple[bytes, list[tuple[bytes, dict]]]:
    """XAUTOCLAIM's reply: Redis 6.2 gives ``[next, entries]``, 7.x adds the ids of
    entries deleted meanwhile: ``[next, entries, deleted]``. Entries of deleted messages
    come back as ``(id, None)`` on 6.2; they are dropped here."""
    if len(reply) not in (2, 3):
        raise TokgenError(f"unexpected XAUTOCLAIM reply of {len(reply)} elements")
    next_id, entries = reply[0], reply[1]
    return next_id, [(eid, fields) for eid, fields in entries if fields]


async def check_redis(url: str) -> None:
    """Fail fast, and clearly, on a wrong URL or password (``connect`` would retry those),
    and on a cluster node named by a plain URL (its keys would answer MOVED or not)."""
    client = client_for(url, socket_connect_timeout=5)
    try:
        await client.ping()
        if cluster_node_url(url) is None and await cluster_enabled(client):
            raise TokgenError(
                f"Redis at {redact_url(url)} is a cluster node: use redis+cluster:// "
                "(or rediss+cluster://) with the same host and port"
            )
    except (RedisConnectionError, RedisClusterException) as exc:  # AuthenticationError is one too
        raise TokgenError(f"cannot use Redis at {redact_url(url)}: {exc}") from None
    finally:
        await client.aclose()


async def cluster_enabled(client: Client) -> bool:
    """Whether the server runs in cluster mode (False where INFO is not allowed, as on
    some managed services: a cluster there is one behind a proxy)."""
    try:
        return bool((await client.info("cluster")).get("cluster_enabled"))
    except ResponseError:
        return False


@asynccontextmanager
async def open_queue(
    redis_url: str | None, embedded_dir: Path, config: QueueConfig
) -> AsyncIterator[tuple[JobQueue, str]]:
    """The queue of a server or worker process, and its URL: on ``redis_url``, or (None)
    on the embedded redis-server in ``embedded_dir``, started here or joined when another
    tokgen process on this machine owns it. On exit the client is closed and an embedded
    server this process started is stopped."""
    embedded = None
    if redis_url is None:
        embedded, redis_url = EmbeddedRedis.start_or_join(embedded_dir)
    try:
        await check_redis(redis_url)
        client = connect(redis_url)
        try:
            queue = JobQueue(client, config)
            await queue.adopt_unbraced_keys()
            await queue.upgrade_indexes()
            yield queue, redis_url
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            embedded.stop()


def drop_entry(pipe: Any, stream: str, entry_id: bytes) -> None:
    """Queue, on ``pipe``, the end of a stream entry: acknowledged and deleted (a job's
    next attempt, if any, is a new entry)."""
    pipe.xack(stream, GROUP, entry_id)
    pipe.xdel(stream, entry_id)


@dataclass(frozen=True)
class QueueConfig:
    prefix: str = "tokgen"
    lease_s: float = 15.0  # an entry idle this long belongs to a lost worker
    result_ttl_s: float = 24 * 3600.0  # a result's life (at most retention_s)
    retention_s: float = 7 * 24 * 3600.0  # a finished job's record, from the moment it finished
    max_queued: int = 10_000  # submissions beyond this many unfinished jobs are refused
    max_per_owner: int = 1_000  # ... and beyond this many of one owner's (one API key)
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\w.-]+", self.prefix):  # braces would break the hash tag
            raise ValueError(f"a queue prefix is letters, digits, '_', '.' and '-', not {self.prefix!r}")

    @property
    def namespace(self) -> str:
        """What every key starts with: the prefix as a hash tag (``{tokgen}``)."""
        return "{" + self.prefix + "}"


@dataclass(frozen=True)
class Claim:
    """A job a worker holds: the stream entry it came from and the attempt's record."""

    job: Job
    stream: str
    entry_id: bytes
    request: bytes
    waited_s: float | None = None  # runnable (queued, backoff over) until claimed; None: taken over
    taken_over: bool = False  # from a worker whose lease expired


@dataclass(frozen=True)
class Cursor:
    """Where a listing page ended: its last job's submission time (the score in every
    listing index) and id. The next page starts after it."""

    created_at: float
    job_id: str


@dataclass(frozen=True)
class QueueDepth:
    """What the queue holds right now (the ``tokgen_jobs_*`` gauges)."""

    queued: dict[Priority, int]  # entries no worker has read yet
    running: dict[Priority, int]  # entries a worker holds
    delayed: int  # retries waiting out their backoff
    dead: int  # dead-letter entries


class JobQueue:
    def __init__(self, client: Client, config: QueueConfig | None = None):
        # redis-py types every reply as a union of everything a server could send; this
        # module knows what each command returns (bytes: decode_responses is off).
        self.r: Any = client
        self.config = config or QueueConfig()
        self.turn = 0  # read_order's turn
        self._salt: bytes | None = None

    # ---- keys -------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.config.namespace, *parts))

    def stream(self, priority: Priority) -> str:
        return self._key("stream", priority)

    async def ensure_groups(self) -> None:
        for priority in PRIORITIES:
            try:
                await self.r.xgroup_create(self.stream(priority), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _read_group(self, read: Callable[[], Awaitable[Any]]) -> Any:
        """``read()`` on the consumer group, creating the groups first if they do not exist
        (a new queue, or a Redis without persistence that restarted) and reading again:
        the one place groups are created, so nothing creates them before every call."""
        try:
            return await read()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        await self.ensure_groups()
        return await read()

    # ---- records ----------------------------------------------------------------------
    async def get(self, job_id: str) -> Job | None:
        raw = await self.r.hget(self._key("job", job_id), "record")
        return decode_job(raw) if raw is not None else None

    async def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """Several records in one round trip (None for each that does not exist)."""
        if not job_ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._key("job", job_id), "record")
            return [decode_job(raw) if raw is not None else None for raw in await pipe.execute()]

    async def _transition(
        self,
        job_id: str,
        rule: Callable[[Job], Job],
        effects: Callable[[Any, Job, Job], None] | None = None,
    ) -> tuple[Job, Job]:
        """Apply ``rule`` to the job's record atomically (optimistic: retried if the record
        changed meanwhile) together with ``effects`` queued on the same transaction."""
        key = self._key("job", job_id)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw, idem = await pipe.hmget(key, ["record", "idem"])
                    if raw is None:
                        raise TokgenError(f"no job {job_id}")
                    before = decode_job(raw)
                    after = rule(before)
                    pipe.multi()
                    pipe.hset(key, "record", encode_job(after))
                    if effects is not None:
                        effects(pipe, before, after)
                    if after.state != before.state:
                        self._move(pipe, after, before.state)
                    if after.state.final and not before.state.final:
                        self._retire(pipe, after, idem.decode() if idem is not None else None)
                    await pipe.execute()
                    return before, after
                except WatchError:
                    continue

    def _move(self, pipe: Any, job: Job, was: JobState | None) -> None:
        """Queue, on ``pipe``, the move of ``job`` into its state's indexes (out of
        ``was``'s)."""
        for owner in (None, job.owner):
            if was is not None:
                pipe.zrem(self._state_index(owner, was), job.id)
            pipe.zadd(self._state_index(owner, job.state), {job.id: job.created_at})

    def _retire(self, pipe: Any, job: Job, idempotency_key: str | None) -> None:
        """Queue, on ``pipe``, what finishing ``job`` does to its keys: the prime leaves,
        partial codes go, the record and idempotency key expire after the retention (the
        result earlier, if its TTL is shorter), and the indexes drop it then (``trim``)."""
        retention = max(1, int(self.config.retention_s))
        key = self._key("job", job.id)
        pipe.hdel(key, "request")
        pipe.delete(self._key("partial", job.id))
        pipe.expire(key, retention)
        pipe.expire(self._key("result", job.id), self._result_ttl())
        if idempotency_key is not None:
            pipe.expire(self._idem(job.owner, idempotency_key), retention)
        member = f"{job.owner} {job.state.value} {job.id}"
        pipe.zadd(self._key("expiring"), {member: time.time() + retention})

    def _result_ttl(self) -> int:
        return max(1, int(min(self.config.result_ttl_s, self.config.retention_s)))

    async def trim(self, now: float | None = None, limit: int = TRIM_BATCH) -> int:
        """Take finished jobs whose retention is over out of the indexes (their records
        expire in Redis itself); returns how many. Runs on every submit and listing, so
        the indexes hold no more than the jobs retained and the unfinished."""
        expiring = self._key("expiring")
        now = time.time() if now is None else now
        due = await self.r.zrangebyscore(expiring, "-inf", now, start=0, num=limit)
        if not due:
            return 0
        async with self.r.pipeline(transaction=False) as pipe:
            for raw in due:
                owner, state, job_id = raw.decode().rsplit(" ", 2)
                for index in (None, owner):
                    pipe.zrem(self._index(index), job_id)
                    pipe.zrem(self._state_index(index, JobState(state)), job_id)
            pipe.zrem(expiring, *due)
            await pipe.execute()
        return len(due)

    # ---- owners -----------------------------------------------------------------------
    async def owner_salt(self) -> bytes:
        """The secret owner ids are derived with (made once, shared by every process on
        this Redis, so a key has the same id on every server)."""
        if self._salt is None:
            key = self._key("owner-salt")
            await self.r.set(key, os.urandom(32).hex(), nx=True)
            self._salt = bytes(await self.r.get(key))
        return self._salt

    def _index(self, owner: str | None) -> str:
        """The listing index of ``owner``'s jobs (None: every job)."""
        return self._key("jobs") if owner is None else self._key("owner", owner, "jobs")

    def _state_index(self, owner: str | None, state: JobState) -> str:
        """The listing index of ``owner``'s jobs (None: every job) in ``state``."""
        parts = ("state", state.value) if owner is None else ("owner", owner, "state", state.value)
        return self._key(*parts)

    async def adopt_unbraced_keys(self) -> int:
        """Rename the keys of a queue written before keys had a hash tag (``tokgen:...``,
        before issue 19) to today's (``{tokgen}:...``), so an upgrade keeps its jobs:
        RENAME keeps TTLs, stream entries and consumer groups. Runs at every start (a
        process of the old version may have written more meanwhile), on one server only:
        the old layout never ran on a cluster. A key whose new name is taken is left as
        it is (logged). Returns how many keys were renamed."""
        if isinstance(self.r, RedisCluster):
            return 0
        old, renamed, taken = f"{self.config.prefix}:", 0, 0
        async for key in self.r.scan_iter(match=f"{old}*", count=1000):
            try:
                moved = await self.r.renamenx(key, self._key(key.decode()[len(old) :]))
            except ResponseError:  # gone meanwhile: renamed by another process starting
                continue
            if moved:
                renamed += 1
            else:
                taken += 1
        if renamed or taken:
            log.warning(
                "renamed %d queue keys to the hash-tagged layout; %d kept: new name taken", renamed, taken
            )
        return renamed

    async def upgrade_indexes(self) -> int:
        """Index jobs stored by a tokgen without per-owner and per-state indexes or
        retention (before issue 17): each gets its owner's and its state's index entries,
        and a finished one its retention (from now) and no prime. Once per Redis (a
        version key); safe to run from several processes at once. Returns jobs indexed."""
        version = self._key("index-version")
        if await self.r.get(version) == INDEX_VERSION:
            return 0
        done, start = 0, 0
        while ids := await self.r.zrange(self._key("jobs"), start, start + TRIM_BATCH - 1):
            start += len(ids)
            for raw in ids:

                def effects(pipe: Any, before: Job, after: Job) -> None:
                    pipe.zadd(self._index(after.owner), {after.id: after.created_at})
                    self._move(pipe, after, None)
                    if after.state.final:
                        self._retire(pipe, after, None)

                try:
                    await self._transition(raw.decode(), lambda job: job, effects)
                except TokgenError:  # gone meanwhile
                    continue
                done += 1
        await self.r.set(version, INDEX_VERSION)
        return done

    # ---- submitting -------------------------------------------------------------------
    def _idem(self, owner: str, idempotency_key: str) -> str:
        return self._key("idem", owner, idempotency_key)

    async def _idempotent(self, client: Any, idem: str, key: str, digest: str) -> str | None:
        """The job ``idem`` names, if it still exists; ``IdempotencyConflict`` if it was
        made for another request (another digest)."""
        stored = await client.get(idem)
        if stored is None:
            return None
        job_id, _, made_for = stored.decode().partition(" ")
        if not await self.r.exists(self._key("job", job_id)):
            return None  # expired or deleted: the key is free again
        if made_for and digest and made_for != digest:
            raise IdempotencyConflict(key, job_id)
        return job_id

    async def idempotent_job(self, owner: str, idempotency_key: str, digest: str) -> str | None:
        """The job ``owner`` already submitted with this key, if any (checked before the
        request is prepared: a retry costs a lookup); ``IdempotencyConflict`` if the key
        was used for a different request."""
        return await self._idempotent(self.r, self._idem(owner, idempotency_key), idempotency_key, digest)

    async def submit(
        self,
        request: bytes,
        priority: Priority,
        idempotency_key: str | None = None,
        owner: str = ANONYMOUS,
        digest: str = "",
        seed: int | None = None,
    ) -> tuple[str, bool]:
        """Queue a prepared job for ``owner`` (``seed``: what it renders with, shown with
        it); returns (job id, created). With an
        idempotency key ``owner`` used before for the same request (same ``digest``), the
        existing job's id (created False); for another request, ``IdempotencyConflict``.
        Keys are per owner: another owner's key of the same name is another key."""
        await self.trim()
        await self.check_room(owner)
        job_id = uuid.uuid4().hex
        idem = self._idem(owner, idempotency_key) if idempotency_key is not None else None
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if idem is not None and idempotency_key is not None:
                        await pipe.watch(idem)  # two submissions with one key: one job
                        existing = await self._idempotent(pipe, idem, idempotency_key, digest)
                        if existing is not None:
                            return existing, False  # leaving the block unwatches
                    now = time.time()
                    job = states.submitted(job_id, priority, now, owner, seed)
                    fields = {"record": encode_job(job), "request": request}
                    pipe.multi()
                    if idem is not None and idempotency_key is not None:
                        fields["idem"] = idempotency_key
                        pipe.set(idem, f"{job_id} {digest}")  # expires with the job (_retire)
                    pipe.hset(self._key("job", job_id), mapping=fields)
                    pipe.zadd(self._key("jobs"), {job_id: now})
                    pipe.zadd(self._index(owner), {job_id: now})
                    self._move(pipe, job, None)
                    pipe.xadd(self.stream(priority), {"job": job_id})
                    await pipe.execute()
                    return job_id, True
                except WatchError:
                    continue

    async def check_room(self, owner: str) -> None:
        """Refuse (``QueueFull``) a submission the queue has no room for: it holds
        ``max_queued`` unfinished jobs, or ``owner`` has ``max_per_owner`` of them (so one
        tenant cannot fill the queue for all). Servers ask before preparing a job, and
        ``submit`` asks again; submissions racing past the check overshoot by at most
        the submissions in flight."""
        if await self.unfinished() >= self.config.max_queued:
            raise QueueFull(f"the queue holds {self.config.max_queued} unfinished jobs; retry later")
        if await self.unfinished_of(owner) >= self.config.max_per_owner:
            raise QueueFull(
                f"this API key already has {self.config.max_per_owner} unfinished jobs, the limit per key; "
                "retry when some have finished (or cancel some)"
            )

    async def unfinished_of(self, owner: str) -> int:
        """``owner``'s jobs queued or running (a retry waiting out its backoff is queued)."""
        counts = [await self.r.zcard(self._state_index(owner, s)) for s in JobState if not s.final]
        return sum(counts)

    async def unfinished(self) -> int:
        """Jobs queued, running or waiting to retry (finished entries leave the streams)."""
        counts = [await self.r.xlen(self.stream(p)) for p in PRIORITIES]
        return sum(counts) + await self.r.zcard(self._key("delayed"))

    async def depth(self) -> QueueDepth:
        queued: dict[Priority, int] = {}
        running: dict[Priority, int] = {}
        for priority in PRIORITIES:
            stream = self.stream(priority)

            async def read(stream: str = stream) -> list:
                async with self.r.pipeline(transaction=False) as pipe:
                    pipe.xlen(stream)
                    pipe.xpending(stream, GROUP)
                    return await pipe.execute()

            length, pending = await self._read_group(read)
            running[priority] = int(pending["pending"])
            queued[priority] = max(0, int(length) - running[priority])
        delayed = await self.r.zcard(self._key("delayed"))
        dead = await self.r.xlen(self._key("dead"))
        return QueueDepth(queued, running, int(delayed), int(dead))

    async def list_jobs(
        self, state: JobState | None, after: Cursor | None, size: int, owner: str | None = None
    ) -> tuple[list[Job], Cursor | None]:
        """``owner``'s jobs (None: everyone's) newest first, after ``after`` (None: from the
        newest), only those in ``state`` if given; and the cursor of the next page (None:
        no more). Reads one index (the owner's, or the owner's in that state) and ``size``
        records: never other owners' jobs or other states' history."""
        await self.trim()
        index = self._index(owner) if state is None else self._state_index(owner, state)
        rows = await self._rows_after(index, after, size + 1)  # one more: is there a next page?
        page = rows[:size]
        found = await self.get_many([job_id for job_id, _ in page])
        jobs = [job for job in found if job is not None]  # None: expired just now
        jobs = [job for job in jobs if state is None or job.state == state]  # moved just now
        return jobs, Cursor(page[-1][1], page[-1][0]) if len(rows) > size else None

    async def _rows_after(self, index: str, after: Cursor | None, count: int) -> list[tuple[str, float]]:
        """Up to ``count`` (id, submission time) of ``index`` after ``after``, in Redis'
        reverse order (time descending, ties by id descending). Positions come from the
        cursor, not an offset: rows added above it (newer jobs) or removed (expired) do not
        shift the page. The ties at the cursor's time and the rows below it are read in
        one transaction."""
        if after is None:
            rows = await self.r.zrevrangebyscore(index, "+inf", "-inf", start=0, num=count, withscores=True)
        else:
            at = repr(after.created_at)  # exact: Redis parses a float's repr back to the same double
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.zrevrangebyscore(index, at, at, withscores=True)
                pipe.zrevrangebyscore(index, f"({at}", "-inf", start=0, num=count, withscores=True)
                ties, older = await pipe.execute()
            rows = [(job_id, t) for job_id, t in ties if job_id < after.job_id.encode()] + older
        return [(job_id.decode(), float(t)) for job_id, t in rows[:count]]

    # ---- cancelling -------------------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        """Queued: cancelled now (its stream entry is skipped when read). Running: marked;
        the worker sees it on its next heartbeat and aborts the render."""
        return (await self._transition(job_id, lambda job: states.cancel(job, time.time())))[1]

    # ---- claiming ---------------------------------------------------------------------
    async def release_due_retries(self) -> int:
        """Re-queue jobs whose backoff is over. Each job moves once: the ZREM decides."""
        moved = 0
        for raw in await self.r.zrangebyscore(self._key("delayed"), 0, time.time()):
            job_id = raw.decode()
            if await self.r.zrem(self._key("delayed"), job_id):
                job = await self.get(job_id)
                if job is not None and job.state == JobState.QUEUED:
                    await self.r.xadd(self.stream(job.priority), {"job": job_id})
                    moved += 1
        return moved

    async def claim(self, worker: str, count: int) -> list[Claim]:
        """Up to ``count`` jobs for ``worker``: first those of lost workers (lease
        expired), then new entries, priorities in ``read_order``."""
        await self.release_due_retries()
        claims: list[Claim] = []
        order = states.read_order(self.turn)
        self.turn += 1
        for priority in order:
            if len(claims) >= count:
                break
            stream = self.stream(priority)
            lease_ms = int(self.config.lease_s * 1000)
            reply = await self._read_group(
                partial(self.r.xautoclaim, stream, GROUP, worker, lease_ms, "0-0", count=count - len(claims))
            )
            for entry_id, fields in claimed_entries(reply)[1]:
                claim = await self._take(worker, stream, entry_id, fields, lost=True)
                if claim is not None:
                    claims.append(claim)
        for priority in order:
            if len(claims) >= count:
                break
            stream = self.stream(priority)
            reply = await self._read_group(
                partial(self.r.xreadgroup, GROUP, worker, {stream: ">"}, count=count - len(claims))
            )
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    claim = await self._take(worker, stream, entry_id, fields, lost=False)
                    if claim is not None:
                        claims.append(claim)
        return claims

    async def _take(
        self, worker: str, stream: str, entry_id: bytes, fields: dict, lost: bool
    ) -> Claim | None:
        job_id = fields[b"job"].decode()
        now = time.time()
        waited: list[float] = []

        def rule(job: Job) -> Job:
            if job.state == JobState.QUEUED:
                waited[:] = [now - max(job.updated_at, job.not_before)]
            if lost and job.state == JobState.RUNNING:  # its worker died: that attempt failed
                job = states.fail(
                    job, None, f"worker {job.worker} lost its lease", True, self.config.policy, now
                )
                if job.state == JobState.QUEUED:
                    job = states.start(job, worker, now)  # retried at once: a crash is not a bad input
                return job
            return states.start(job, worker, now)

        def effects(pipe, before: Job, after: Job) -> None:
            if after.state != JobState.RUNNING:  # dead after its last lost attempt
                drop_entry(pipe, stream, entry_id)
                if after.state == JobState.DEAD:
                    self._dead_letter(pipe, job_id, after.error or "")

        try:
            _, job = await self._transition(job_id, rule, effects)
        except (InvalidTransition, TokgenError):  # cancelled, finished or deleted meanwhile
            async with self.r.pipeline(transaction=True) as pipe:
                drop_entry(pipe, stream, entry_id)
                await pipe.execute()
            return None
        if job.state != JobState.RUNNING:
            return None
        request = await self.r.hget(self._key("job", job_id), "request")
        return Claim(job, stream, entry_id, request or b"", waited[0] if waited else None, lost)

    # ---- while running ----------------------------------------------------------------
    async def heartbeat(self, claim: Claim, worker: str) -> Job | None:
        """Renew the lease. Returns the current record, or None when the attempt is no
        longer this worker's (taken over after a stall): the caller must stop it."""
        job = await self.get(claim.job.id)
        if job is None or job.state != JobState.RUNNING or job.worker != worker:
            return None
        await self.r.xclaim(claim.stream, GROUP, worker, 0, [claim.entry_id], justid=True)
        return job

    async def report_progress(
        self, claim: Claim, worker: str, fraction: float, levels: tuple[float, ...]
    ) -> None:
        await self._transition(
            claim.job.id, lambda j: states.progressed(j, worker, fraction, levels, time.time())
        )

    async def save_partial(self, claim: Claim, codes_npz: bytes) -> None:
        await self.r.set(self._key("partial", claim.job.id), codes_npz, ex=int(self.config.result_ttl_s))

    async def load_partial(self, job_id: str) -> bytes | None:
        return await self.r.get(self._key("partial", job_id))

    # ---- finishing --------------------------------------------------------------------
    def _finish(self, pipe, claim: Claim) -> None:
        drop_entry(pipe, claim.stream, claim.entry_id)
        pipe.delete(self._key("partial", claim.job.id))

    def _dead_letter(self, pipe, job_id: str, error: str) -> None:
        pipe.xadd(
            self._key("dead"), {"job": job_id, "error": error}, maxlen=MAX_DEAD_LETTERS, approximate=True
        )

    async def succeed(
        self, claim: Claim, worker: str, audio: bytes, codes_npz: bytes, summary: str = "{}"
    ) -> Job:
        """Store the result and mark the job succeeded, in one transaction, only if this
        worker still runs the attempt (else ``InvalidTransition``: nothing is written)."""
        result = self._key("result", claim.job.id)

        def effects(pipe, before: Job, after: Job) -> None:
            pipe.delete(result)
            pipe.hset(result, mapping={"audio": audio, "codes": codes_npz, "summary": summary})
            pipe.expire(result, self._result_ttl())
            self._finish(pipe, claim)

        return (
            await self._transition(claim.job.id, lambda j: states.succeed(j, worker, time.time()), effects)
        )[1]

    async def fail(self, claim: Claim, worker: str, error: str, retryable: bool) -> Job:
        """An attempt failed: retried after a backoff, failed, dead-lettered or (if a
        cancel was requested) cancelled, per ``states.fail``."""
        now = time.time()

        def effects(pipe, before: Job, after: Job) -> None:
            self._finish(pipe, claim)
            if after.state == JobState.QUEUED:
                pipe.zadd(self._key("delayed"), {claim.job.id: after.not_before})
            if after.state == JobState.DEAD:
                self._dead_letter(pipe, claim.job.id, error)

        rule = lambda j: states.fail(j, worker, error, retryable, self.config.policy, now)  # noqa: E731
        return (await self._transition(claim.job.id, rule, effects))[1]

    async def release(self, claim: Claim, worker: str) -> Job:
        """Give a running job back (worker shutdown): queued again at once."""

        def effects(pipe, before: Job, after: Job) -> None:
            drop_entry(pipe, claim.stream, claim.entry_id)
            if after.state == JobState.QUEUED:
                pipe.xadd(self.stream(after.priority), {"job": claim.job.id})

        return (
            await self._transition(claim.job.id, lambda j: states.released(j, worker, time.time()), effects)
        )[1]

    async def cancelled(self, claim: Claim, worker: str) -> Job:
        def effects(pipe, before: Job, after: Job) -> None:
            self._finish(pipe, claim)

        return (
            await self._transition(claim.job.id, lambda j: states.cancelled(j, worker, time.time()), effects)
        )[1]

    # ---- reading results --------------------------------------------------------------
    async def result(self, job_id: str) -> tuple[bytes, bytes] | None:
        """(audio, codes) of a succeeded job, None once the TTL has expired."""
        stored = await self.r.hmget(self._key("result", job_id), ["audio", "codes"])
        return (stored[0], stored[1]) if stored[0] is not None else None

    async def result_summary(self, job_id: str) -> dict | None:
        raw = await self.r.hget(self._key("result", job_id), "summary")
        return json.loads(raw) if raw is not None else None

    async def dead_letters(self) -> list[tuple[str, str]]:
        entries = await self.r.xrange(self._key("dead"))
        return [(f[b"job"].decode(), f[b"error"].decode()) for _, f in entries]
