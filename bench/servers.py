"""The two servers every ingest benchmark compares: `contact-monitor serve` on the embedded
default, and the trivial GIF route (`baseline_app.py`), under the same uvicorn settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def service_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This environment without CM_* variables, plus the data directory and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")}
    env.update({"CM_DATA_DIR": str(data_dir), "CM_COOKIE_SECURE": "false", **settings})
    return env


def start_service(
    data_dir: Path,
    port: int,
    *uvicorn_args: str,
    settings: dict[str, str] | None = None,
    root: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """`serve` from the checkout in `root` (its packages come first: `python -m` runs from it)."""
    env = service_env(data_dir, **(settings or {}))
    command = [sys.executable, "-m", "contact_monitor.cli", "serve", "--port", str(port), *uvicorn_args]
    return subprocess.Popen(command, env=env, cwd=root, stderr=subprocess.DEVNULL)


def start_baseline(port: int, *uvicorn_args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--port", str(port), *uvicorn_args]
    return subprocess.Popen(command, cwd=ROOT)


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Until `url` answers 200; exits when the process died or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def create_key(data_dir: Path, role: str, **settings: str) -> str:
    """An API key through the CLI (`contact-monitor api-key create`), for a served data directory."""
    command = [
        sys.executable,
        "-m",
        "contact_monitor.cli",
        "api-key",
        "create",
        "--name",
        "bench",
        "--role",
        role,
    ]
    result = subprocess.run(
        command, env=service_env(data_dir, **settings), cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]
