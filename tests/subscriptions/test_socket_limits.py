"""Websocket caps, revoked keys and close codes (api/sockets.py), through Starlette's TestClient:
the real app with its lifespan, in a thread of its own."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from pymongo import MongoClient
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from contact_monitor.app import create_app
from tests.conftest import CHROME
from tests.servers import create_key, forget_prefix, server_env

PROTOCOL = ["graphql-transport-ws"]
LIVE = {"id": "1", "type": "subscribe", "payload": {"query": "subscription { liveVisits { cursor } }"}}


@pytest.fixture
def strict(settings):
    """Settings with small caps; the keys are created (and revoked) through the CLI."""
    settings = replace(
        settings, ws_max_sockets=4, ws_max_per_key=2, ws_max_unauthenticated=2, key_recheck_seconds=3600
    )
    env = server_env(CM_MONGODB_URI=settings.mongodb_uri, CM_MONGODB_DB=settings.mongodb_db)
    yield settings, env
    with MongoClient(settings.mongodb_uri) as client:
        client.drop_database(settings.mongodb_db)
    forget_prefix(settings.redis_url, settings.redis_prefix)


def init(ws, key: str) -> dict:
    ws.send_text(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}))
    return json.loads(ws.receive_text())


def closed_with(ws) -> int:
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.receive_text()
    return closed.value.code


def revoke(env, name):
    from tests.servers import cli

    cli(env, "api-key", "revoke", name)


def test_a_key_holds_at_most_its_sockets(strict):
    settings, env = strict
    key = create_key(env, "dash", "read")
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as one:
            assert init(one, key)["type"] == "connection_ack"
            with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as two:
                assert init(two, key)["type"] == "connection_ack"
                with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as three:
                    three.send_text(
                        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}})
                    )
                    assert closed_with(three) == 4429
            # one place freed: a new socket of the key is accepted again
            with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as again:
                assert init(again, key)["type"] == "connection_ack"


def test_sockets_that_never_authenticate_are_capped(strict):
    settings, _ = strict
    with TestClient(create_app(settings)) as client:
        with (
            client.websocket_connect("/graphql", subprotocols=PROTOCOL),
            client.websocket_connect("/graphql", subprotocols=PROTOCOL),
            client.websocket_connect("/graphql", subprotocols=PROTOCOL) as third,
        ):
            assert closed_with(third) == 1013


def test_every_subscribe_checks_the_key_again(strict):
    settings, env = strict  # the periodic check is an hour away: only the subscribe can notice
    key = create_key(env, "dash", "read")
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as ws:
            assert init(ws, key)["type"] == "connection_ack"
            revoke(env, "dash")
            ws.send_text(json.dumps(LIVE))
            assert closed_with(ws) == 4403


def test_open_sockets_of_a_revoked_key_are_closed(strict):
    settings, env = strict
    key = create_key(env, "dash", "read")
    with TestClient(create_app(replace(settings, key_recheck_seconds=0.2))) as client:
        with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as ws:
            assert init(ws, key)["type"] == "connection_ack"
            ws.send_text(json.dumps(LIVE))
            revoke(env, "dash")
            assert closed_with(ws) == 4403  # within a recheck, with no message from the client


def test_a_lone_surrogate_in_the_key_is_4403(strict):
    settings, _ = strict
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as ws:
            ws.send_text('{"type": "connection_init", "payload": {"authorization": "Bearer cm_\\ud800"}}')
            assert closed_with(ws) == 4403


def test_the_legacy_protocol_is_accepted_then_closed_with_4406(strict):
    settings, _ = strict
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as ws:
            # the handshake names the subprotocol, as browsers require, then the close says why
            assert ws.accepted_subprotocol == "graphql-ws"
            assert closed_with(ws) == 4406


def test_errors_sent_over_the_socket_carry_codes(strict):
    settings, env = strict
    key = create_key(env, "dash", "read")
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=PROTOCOL) as ws:
            init(ws, key)
            bad = {"id": "v", "type": "subscribe", "payload": {"query": "subscription { nope }"}}
            ws.send_text(json.dumps(bad))
            message = json.loads(ws.receive_text())
            assert (
                message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            )
            for i in range(20):
                ws.send_text(json.dumps({**LIVE, "id": f"s{i}"}))
            ws.send_text(json.dumps({**LIVE, "id": "one-too-many"}))
            message = json.loads(ws.receive_text())
            assert message["id"] == "one-too-many" and message["type"] == "error"
            assert message["payload"][0]["message"] == "Subscription limit reached"
            assert message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_without_the_servers_frame_writer_shared_feeds_go_through_asgi(strict):
    """The TestClient is no uvicorn: no raw-frame extension, so every frame of a shared group is
    written through ASGI by each member's own writer; both members get every event, and a
    socket subscribed twice under different ids gets each frame with its own id."""
    settings, env = strict
    key = create_key(env, "dash", "read")
    with TestClient(create_app(settings)) as client:
        with (
            client.websocket_connect("/graphql", subprotocols=PROTOCOL) as one,
            client.websocket_connect("/graphql", subprotocols=PROTOCOL) as two,
        ):
            init(one, key)
            init(two, key)
            query = {"query": "subscription { liveVisits { type hit { url } } }"}
            one.send_text(json.dumps({"id": "a", "type": "subscribe", "payload": query}))
            one.send_text(json.dumps({"id": "b", "type": "subscribe", "payload": query}))
            two.send_text(json.dumps({"id": "a", "type": "subscribe", "payload": query}))
            metrics = {"Authorization": f"Bearer {key}"}
            deadline = time.monotonic() + 30  # until the three subscriptions have joined their group
            while "cm_subscribers 3.0" not in client.get("/metrics", headers=metrics).text:
                assert time.monotonic() < deadline, "the subscriptions did not start"
                time.sleep(0.02)
            assert "cm_shared_feeds 1.0" in client.get("/metrics", headers=metrics).text
            for i in range(3):
                client.post(
                    "/mtc/event", data={"page_url": f"https://s.test/{i}"}, headers={"User-Agent": CHROME}
                )
            got: dict[str, list[str]] = {"a": [], "b": []}
            while len(got["a"]) + len(got["b"]) < 6:
                message = json.loads(one.receive_text())
                got[message["id"]].append(message["payload"]["data"]["liveVisits"]["hit"]["url"])
            urls = [f"https://s.test/{i}" for i in range(3)]
            assert got == {"a": urls, "b": urls}
            assert [
                json.loads(two.receive_text())["payload"]["data"]["liveVisits"]["hit"]["url"] for _ in urls
            ] == urls


def test_a_refused_origin_is_logged_naming_the_setting(strict, caplog):
    settings, _ = strict
    with TestClient(create_app(replace(settings, dashboard_origins=("http://dash.test",)))) as client:
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect(
                "/graphql", subprotocols=PROTOCOL, headers={"origin": "http://evil.test"}
            ):
                pass
    messages = [record.getMessage() for record in caplog.records]
    assert any("'http://evil.test'" in m and "CM_DASHBOARD_ORIGINS" in m for m in messages), messages
    assert not any("allowed_origins" in m for m in messages), messages
