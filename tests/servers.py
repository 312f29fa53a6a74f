"""Real `contact-monitor` processes for tests that need a server on a port (browsers, websockets)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx


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
