"""The `contact-monitor` command: the field registry CLI, and `serve` on the embedded default."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from contact_monitor.cli import main
from contact_monitor.embedded import STATE_FILE, free_port, redis_ready
from contact_monitor.storage import Storage
from contact_monitor.storage.fields import FieldDefinition
from tests.conftest import CHROME
from tests.servers import collect_refused_sockets


@pytest.fixture
def cli_env(mongodb_uri, monkeypatch, tmp_path):
    """The CLI reads its settings from the environment, as an operator's shell would give them."""
    database = f"cmtest_cli_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CM_MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("CM_MONGODB_DB", database)
    monkeypatch.setenv("CM_DATA_DIR", str(tmp_path))
    yield database
    with MongoClient(mongodb_uri) as client:
        client.drop_database(database)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fields_list_shows_core_fields_none_public(cli_env, capsys):
    code, out, _ = run(capsys, "fields", "list", "--json")
    fields = {f["alias"]: f for f in json.loads(out)}
    assert code == 0
    assert {"email", "firstname", "lastname", "company", "phone", "city", "country", "timezone"} <= set(
        fields
    )
    assert not any(f["publicly_updatable"] for f in fields.values())
    assert fields["email"]["unique"] and fields["email"]["type"] == "email"
    code, out, _ = run(capsys, "fields", "list")
    assert out.splitlines()[0].split() == ["ALIAS", "TYPE", "PUBLIC", "UNIQUE", "LABEL"]


def test_fields_create_and_update(cli_env, capsys):
    assert run(capsys, "fields", "create", "plan", "--type", "text", "--publicly-updatable")[0] == 0
    code, out, _ = run(capsys, "fields", "update", "email", "--publicly-updatable")
    assert code == 0 and out.strip() == "email: email (publicly-updatable, unique)"
    code, out, _ = run(capsys, "fields", "update", "email", "--no-publicly-updatable", "--no-unique")
    assert out.strip() == "email: email"
    code, out, _ = run(capsys, "fields", "list", "--json")
    fields = {f["alias"]: f for f in json.loads(out)}
    assert fields["plan"]["publicly_updatable"] and not fields["plan"]["core"]
    assert not fields["email"]["unique"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fields", "create", "Bad-Alias"], "invalid alias"),
        (["fields", "create", "page_url"], "tracking parameter"),
        (["fields", "create", "email"], "already exists"),
        (["fields", "update", "nope", "--unique"], "no field 'nope'"),
    ],
)
def test_field_errors_are_clear_and_exit_2(cli_env, capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and err.startswith("contact-monitor: error:")


def test_unknown_type_is_refused_by_the_parser(cli_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fields", "create", "x", "--type", "colour"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


async def test_making_a_field_unique_indexes_existing_contacts(cli_env, mongodb_uri, capsys):
    storage = Storage.connect(mongodb_uri, cli_env)
    await storage.create_indexes()
    now = dt.datetime.now(dt.UTC)
    contacts = storage.contacts
    older = await contacts.add(contacts.draft(now, None, fields={"member_no": "M-1"}))
    await contacts.add(contacts.draft(now + dt.timedelta(seconds=1), None, fields={"member_no": "M-1"}))
    await storage.fields.create(FieldDefinition("member_no", "Member No"))
    indexed, conflicts = await storage.contacts.index_unique_field("member_no")
    assert (indexed, conflicts) == (1, 1)
    assert (await storage.contacts.find_by_unique(["member_no:m-1"]))["_id"] == older["_id"]
    await storage.contacts.unindex_unique_field("member_no")
    assert await storage.contacts.find_by_unique(["member_no:m-1"]) is None
    assert "ids" not in await storage.contacts.get(older["_id"])
    await storage.close()


def test_help_explains_commands_and_configuration(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "serve" in out and "fields" in out and "CM_MONGODB_URI" in out


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def _serve(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")}
    env.update({"CM_DATA_DIR": str(data_dir), "CM_COOKIE_SECURE": "false", "CM_FIELD_CACHE_SECONDS": "0"})
    return subprocess.Popen(
        [sys.executable, "-m", "contact_monitor.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen, how: int = signal.SIGINT) -> str:
    process.send_signal(how)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode()
    return output.decode()


def test_serve_on_the_embedded_default_keeps_data_across_restarts(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(tmp_path, port)
    try:
        _wait_for(f"{base}/health", server)
        state = json.loads((tmp_path / STATE_FILE).read_text())
        assert set(state) == {"mongodb", "redis"}
        # The field CLI reuses the running servers instead of opening the same files twice.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")} | {
            "CM_DATA_DIR": str(tmp_path)
        }
        update = subprocess.run(
            [
                sys.executable,
                "-m",
                "contact_monitor.cli",
                "fields",
                "update",
                "email",
                "--publicly-updatable",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert update.returncode == 0, update.stderr
        with httpx.Client(base_url=base, headers={"User-Agent": CHROME}) as browser:
            pixel = browser.get(
                "/mtracking.gif", params={"page_url": "cart_screen", "email": "ann@example.com"}
            )
            assert pixel.headers["content-type"] == "image/gif"
            contact_id = pixel.cookies["mtc_id"]
        mongo = MongoClient(state["mongodb"]["uri"])
        hit = mongo.contact_monitor.hits.find_one()
        assert hit["url"] == "cart_screen" and hit["contact_id"] == contact_id
        mongo.close()
    finally:
        output = _stop(server)
    assert "embedded mongodb" in output and "embedded redis" in output
    assert not (tmp_path / STATE_FILE).exists()
    assert not redis_ready(state["redis"]["port"])  # the embedded servers stopped with it

    server = _serve(tmp_path, port)
    try:
        _wait_for(f"{base}/health", server)
        with httpx.Client(base_url=base, headers={"User-Agent": CHROME}) as fresh_browser:
            body = fresh_browser.post(
                "/mtc/event", data={"page_url": "again", "email": "ann@example.com"}
            ).json()
        assert body["id"] == contact_id  # contacts, fields and flags survived the restart
        stream = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json,sys,redis; "
                f"r=redis.Redis.from_url({json.loads((tmp_path / STATE_FILE).read_text())['redis']['uri']!r}); "
                "print(r.xlen('cm:activity'))",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert int(stream.stdout) >= 4  # the stream survived too (append-only file)
        redis_port = json.loads((tmp_path / STATE_FILE).read_text())["redis"]["port"]
    finally:
        _stop(server, signal.SIGTERM)  # as a service manager stops it
    assert not redis_ready(redis_port) and not (tmp_path / STATE_FILE).exists()


def test_api_key_create_list_revoke(cli_env, capsys):
    code, out, err = run(capsys, "api-key", "create", "--name", "dashboard", "--role", "read")
    key = out.strip().splitlines()[-1]
    assert code == 0 and key.startswith("cm_") and len(key) > 40 and "shown only now" in err
    code, out, _ = run(capsys, "api-key", "list")
    assert code == 0 and "dashboard" in out and "read" in out and key not in out
    assert run(capsys, "api-key", "revoke", "dashboard")[0] == 0
    code, _, err = run(capsys, "api-key", "revoke", "dashboard")
    assert code == 2 and "no active key named 'dashboard'" in err
    code, _, err = run(capsys, "api-key", "create", "--name", "dashboard", "--role", "write")
    assert code == 2 and "already exists" in err


def test_api_key_role_is_checked_by_the_parser(cli_env, capsys):
    with pytest.raises(SystemExit):
        main(["api-key", "create", "--name", "x", "--role", "root"])
    assert "invalid choice" in capsys.readouterr().err


def test_serve_names_the_server_it_cannot_reach_in_one_line(
    mongodb_uri, redis_url, tmp_path, monkeypatch, capsys
):
    from contact_monitor.embedded import free_port

    monkeypatch.setenv("CM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CM_REDIS_URL", redis_url)
    monkeypatch.setenv("CM_MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach MongoDB at CM_MONGODB_URI" in err, err
    monkeypatch.setenv("CM_MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("CM_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach Redis at CM_REDIS_URL" in err, err
    assert "Traceback" not in err
    collect_refused_sockets()


def test_serve_refuses_an_unwritable_data_directory_in_one_line(tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("CM_DATA_DIR", str(blocked / "data"))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CM_DATA_DIR" in err and str(blocked / "data") in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999"], "99999 is not between 1 and 65535"),
        (["serve", "--port", "-1"], "-1 is not between 1 and 65535"),
        (["serve", "--workers", "0"], "0 is not between 1 and 64"),
        (["serve", "--port", "http"], "'http' is not a whole number"),
    ],
)
def test_serve_refuses_impossible_ports_and_worker_counts_at_once(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


async def test_a_core_field_keeps_its_type(harness):
    from contact_monitor.core.errors import FieldError
    from contact_monitor.core.fields import update_field

    with pytest.raises(FieldError, match="core field: its type \\(email\\) cannot change"):
        await update_field(harness.services.storage, "email", type="number")
    assert (await harness.services.storage.fields.get("email")).type == "email"
    changed = await update_field(harness.services.storage, "email", type="email", publicly_updatable=True)
    assert changed.field.publicly_updatable  # the same type, restated, is fine


def test_one_serve_per_data_directory_and_orphans_are_adopted(tmp_path):
    """A second `serve` on the same data directory is refused in one line while the first runs.
    After the first is killed with SIGKILL (its embedded servers keep running), the next `serve`
    adopts them, says so, serves the same data, and stops them when it stops."""
    port, other_port = free_port(), free_port()
    first = _serve(tmp_path, port)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", first)
        second = _serve(tmp_path, other_port)
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 2
        lines = [line for line in output.decode().splitlines() if "error" in line]
        assert lines == [
            f"contact-monitor: error: another contact-monitor process (pid {first.pid}) runs the embedded "
            f"servers of CM_DATA_DIR={tmp_path}: stop it first, or give this one another CM_DATA_DIR"
        ]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": CHROME}) as browser:
            contact_id = browser.post("/mtc/event", data={"page_url": "before"}).json()["id"]
        state = json.loads((tmp_path / STATE_FILE).read_text())
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert redis_ready(state["redis"]["port"])  # orphans: still running

    third = _serve(tmp_path, port)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", third)
        assert json.loads((tmp_path / STATE_FILE).read_text())["redis"]["pid"] == state["redis"]["pid"]
        mongo = MongoClient(state["mongodb"]["uri"])
        assert mongo.contact_monitor.contacts.find_one({"_id": contact_id}) is not None
        mongo.close()
    finally:
        output = _stop(third)
    assert "adopting the server" in output
    assert not redis_ready(state["redis"]["port"]) and not (tmp_path / STATE_FILE).exists()


def test_serve_says_which_data_directory_it_uses(tmp_path):
    port = free_port()
    server = _serve(tmp_path, port)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", server)
    finally:
        output = _stop(server)
    assert f"data directory: {tmp_path.resolve()} (CM_DATA_DIR)" in output
