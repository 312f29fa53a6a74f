"""Real `contact-monitor` processes for tests that need a server on a port (browsers, websockets)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from pymongo import MongoClient
from redis import Redis

# Every Redis key the suite writes is under `cmtest:<this session>:`; each fixture removes its
# own prefix, and the session checks that nothing is left (tests/conftest.py).
SESSION_PREFIX = f"cmtest:{uuid.uuid4().hex[:8]}:"


def redis_prefix(tag: str) -> str:
    """A key prefix of this session for one test or fixture."""
    return f"{SESSION_PREFIX}{tag}:"


def forget_prefix(redis_url: str, prefix: str) -> int:
    """Deletes every key under `prefix`; returns how many there were."""
    with Redis.from_url(redis_url) as redis:
        keys = list(redis.scan_iter(match=prefix + "*", count=1000))
        if keys:
            redis.delete(*keys)
        return len(keys)


def server_env(**settings: str) -> dict[str, str]:
    """This process's environment without any CM_* variable, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")}
    env.update(settings)
    return env


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contact_monitor.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def create_key(env: Mapping[str, str], name: str, role: str) -> str:
    """`contact-monitor api-key create`: the key is the last line of standard output."""
    return cli(env, "api-key", "create", "--name", name, "--role", role).stdout.strip().splitlines()[-1]


def start_server(env: Mapping[str, str], port: int, timeout: float = 60) -> subprocess.Popen[bytes]:
    """`contact-monitor serve` on 127.0.0.1:<port>, returned once /health answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "contact_monitor.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=dict(env),
    )
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the server on port {port} exited with {process.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the server on port {port} did not start"
        time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


@dataclass(frozen=True)
class Store:
    """A database and a Redis prefix of their own for the servers of one fixture."""

    mongodb_uri: str
    redis_url: str
    database: str

    @classmethod
    def new(cls, mongodb_uri: str, redis_url: str, name: str) -> Store:
        return cls(mongodb_uri, redis_url, f"cmtest_{name}_{uuid.uuid4().hex[:8]}")

    def env(self, **settings: str) -> dict[str, str]:
        """`server_env` pointing at this store, plus `settings`."""
        return server_env(
            CM_MONGODB_URI=self.mongodb_uri,
            CM_MONGODB_DB=self.database,
            CM_REDIS_URL=self.redis_url,
            CM_REDIS_PREFIX=redis_prefix(self.database),
            **settings,
        )

    def drop(self) -> None:
        """Removes the database and every Redis key of the prefix."""
        forget_prefix(self.redis_url, redis_prefix(self.database))
        with MongoClient(self.mongodb_uri) as client:
            client.drop_database(self.database)


def collect_refused_sockets() -> None:
    """PyMongo leaves the socket of a refused connection to the garbage collector (PYTHON-3923),
    whose ResourceWarning then surfaces in whatever test runs next: tests that connect to a port
    nobody listens on collect it themselves, here, where it is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
