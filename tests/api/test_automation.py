"""Rules, points, triggers and webhooks (docs/automation.md), against the real app, Redis and
SecantusDB, with a real local HTTP receiver for the webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from contact_monitor.core.automation import GROUP
from contact_monitor.core.errors import BadUserInput
from contact_monitor.core.rules import MAX_PATTERN, MAX_WILDCARDS, Rule, validate_rule
from contact_monitor.settings import Settings
from tests.api.conftest import Api
from tests.conftest import Harness, running
from tests.subscriptions.test_feed import started, take

SECRET = "s3cret-for-the-receiver-0123"
TIMEOUT = 15
CREATE_RULE = """mutation($input: RuleInput!) { createRule(input: $input) { id name on urlMatches points
    addTags trigger frequency periodSeconds } }"""
CREATE_WEBHOOK = (
    """mutation($input: WebhookInput!) { createWebhook(input: $input) { id url types enabled } }"""
)
DELIVERIES = """query($id: ID!) { webhookDeliveries(webhookId: $id) { id activityId type status
    attempts { statusCode error } } }"""
TIMELINE = """query($id: ID!) { contact(id: $id) { points tags timeline(types: [POINTS_CHANGED, TRIGGER_FIRED]) {
    edges { node { __typename ... on PointsChanged { delta total rule { id name } causedBy }
                   ... on TriggerFired { trigger rule { id name } causedBy } } } } } }"""


async def eventually(
    check: Callable[[], Awaitable[Any]],
    what: str,
    *harnesses: Harness,
    events: tuple[asyncio.Event, ...] = (),
) -> Any:
    """`check` again after each batch the harnesses' consumers handle and each webhook attempt
    they make (and each of `events`), until it returns something truthy: the consumer works off
    the request path. Never a sleep."""
    watched = [*events]
    for h in harnesses:
        watched += [h.services.automation.progress, h.services.webhooks.progress]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        for event in watched:
            event.clear()
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        waits = [asyncio.ensure_future(event.wait()) for event in watched]
        try:
            await asyncio.wait(waits, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


class Receiver:
    """A real HTTP server on 127.0.0.1: records each request, answers the next status queued."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay = delay  # before each answer (a slow receiver)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((headers, body))
                self.arrived.set()
                if self.delay:
                    await asyncio.sleep(self.delay)
                status = self.statuses.pop(0) if self.statuses else 200
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def fast(settings: Settings, **changes: Any) -> Settings:
    """Retries after 50 ms, stale entries claimed after 200 ms, no lingering: the tests wait on
    events, not time."""
    defaults: dict[str, Any] = {
        "webhook_retry_seconds": 0.05,
        "automation_claim_seconds": 0.2,
        "automation_linger_ms": 0,
        "webhook_allow_private": True,  # the receiver listens on 127.0.0.1
    }
    return dataclasses.replace(settings, **{**defaults, **changes})


@pytest.fixture
async def quick(settings: Settings) -> AsyncIterator[Harness]:
    async with running(fast(settings)) as h:
        yield h


async def cart_rule(api: Api, **extra: Any) -> dict[str, Any]:
    rule = {
        "name": "Cart seen",
        "on": "PAGE_HIT",
        "urlMatches": "cart_screen",
        "points": 10,
        "addTags": ["cart"],
        "trigger": "cart_seen",
        "frequency": "ONCE_PER_PERIOD",
        "periodSeconds": 3600,
        **extra,
    }
    data = await api(CREATE_RULE, {"input": rule}, role="admin")
    return dict(data["createRule"])


async def points_of(harness: Harness, contact_id: str) -> int:
    doc = await harness.db.contacts.find_one({"_id": contact_id})
    return int((doc or {}).get("points", 0))


def signed(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-cm-signature", ""), expected)


async def test_the_mobile_flow_with_a_rule_on_cart_screen(quick: Harness) -> None:
    """The user document's mobile flow: screen views with one cookie jar; a rule on cart_screen
    gives +10 points once per period, tags `cart`, fires `cart_seen`; the timeline says why, a
    dashboard subscribed to triggers gets it, and a real receiver gets the signed webhook."""
    api = Api(quick)
    rule = await cart_rule(api)
    assert rule["frequency"] == "ONCE_PER_PERIOD" and rule["urlMatches"] == "cart_screen"
    async with Receiver() as receiver:
        hook = await api(
            CREATE_WEBHOOK,
            {"input": {"url": receiver.url, "types": ["TRIGGER_FIRED"], "secret": SECRET}},
            role="admin",
        )
        feed = await started(quick, filter={"trigger": "cart_seen"})
        async with quick.browser(user_agent="ShopApp/2.1 (iPhone; iOS 17.0)") as app:
            first = await quick.event(app, page_url="home_screen", page_title="Home")
            contact_id = first["id"]
            await quick.event(app, page_url="Cart_Screen", page_title="Cart")  # case-insensitive
            assert await eventually(lambda: _equals(points_of(quick, contact_id), 10), "points", quick)
            await quick.event(app, page_url="cart_screen", page_title="Cart again")  # same period
            await quick.event(app, page_url="checkout_screen")

        event = await take(feed)
        assert event["type"] == "TRIGGER_FIRED" and event["contact"]["id"] == contact_id
        assert event["data"]["trigger"] == "cart_seen" and event["data"]["rule_id"] == rule["id"]
        await feed.close()

        await eventually(lambda: _true(receiver.requests), "the webhook", quick, events=(receiver.arrived,))
        headers, body = receiver.requests[0]
        assert signed(headers, body)
        sent = json.loads(body)
        assert sent["type"] == "trigger_fired" and sent["trigger"] == "cart_seen"
        assert headers["x-cm-delivery"] == f"{hook['createWebhook']['id']}:{sent['activity_id']}"
        assert headers["x-cm-event"] == "trigger_fired"

        # Every later hit was handled too (the consumer is past them), and gave nothing more.
        stream_ids = [entry_id for entry_id, _ in await quick.redis.xrange(quick.settings.stream_key)]
        await eventually(lambda: _acked(quick, stream_ids[-1]), "the consumer to handle every hit", quick)
        assert await points_of(quick, contact_id) == 10
        data = await api(TIMELINE, {"id": contact_id})
        contact = data["contact"]
        assert contact["points"] == 10 and contact["tags"] == ["cart"]
        kinds = {edge["node"]["__typename"]: edge["node"] for edge in contact["timeline"]["edges"]}
        assert len(contact["timeline"]["edges"]) == 2
        assert kinds["PointsChanged"]["delta"] == 10 and kinds["PointsChanged"]["total"] == 10
        assert kinds["PointsChanged"]["rule"] == {"id": rule["id"], "name": "Cart seen"}
        assert kinds["TriggerFired"]["trigger"] == "cart_seen"
        cart_hit = await quick.db.hits.find_one({"url": "Cart_Screen"})
        assert kinds["PointsChanged"]["causedBy"] == str(cart_hit["_id"])
        assert len(receiver.requests) == 1  # one trigger, one delivery


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _true(value: Any) -> bool:
    return bool(value)


async def _acked(harness: Harness, entry_id: Any) -> bool:
    """The group's last delivered id is at or past `entry_id` and nothing is pending."""
    groups = await harness.redis.xinfo_groups(harness.settings.stream_key)
    group = next(g for g in groups if g["name"] in (GROUP, GROUP.encode()))
    last = group["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    wanted = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    as_tuple = lambda i: tuple(int(p) for p in i.split("-"))  # noqa: E731
    return bool(as_tuple(last) >= as_tuple(wanted) and group["pending"] == 0)


async def hook_and_activity(api: Api, receiver: Receiver, email: str) -> str:
    """A webhook on CUSTOM_ACTIVITY to the receiver, then one custom activity; the webhook's id."""
    hook = await api(
        CREATE_WEBHOOK,
        {"input": {"url": receiver.url, "types": ["CUSTOM_ACTIVITY"], "secret": SECRET}},
        role="admin",
    )
    record = 'mutation($email: String!) { recordActivity(contact: {email: $email}, type: "chat") { id } }'
    await api(record, {"email": email}, role="write")
    return str(hook["createWebhook"]["id"])


async def test_a_receiver_that_fails_twice_gets_the_event_once_more_and_the_log_shows_three_attempts(
    quick: Harness,
) -> None:
    api = Api(quick)
    async with Receiver(statuses=[500, 503, 200]) as receiver:
        hook_id = await hook_and_activity(api, receiver, "ann@example.com")

        async def delivered() -> Any:
            rows = (await api(DELIVERIES, {"id": hook_id}, role="admin"))["webhookDeliveries"]
            return rows if rows and rows[0]["status"] == "delivered" else None

        rows = await eventually(delivered, "the third attempt", quick)
        assert len(rows) == 1
        assert [a["statusCode"] for a in rows[0]["attempts"]] == [500, 503, 200]
        assert [a["error"] for a in rows[0]["attempts"]] == ["HTTP 500", "HTTP 503", None]
        assert len(receiver.requests) == 3
        ids = {headers["x-cm-delivery"] for headers, _ in receiver.requests}
        bodies = {body for _, body in receiver.requests}
        assert ids == {rows[0]["id"]} and len(bodies) == 1  # the same event, to deduplicate by id
        assert all(signed(headers, body) for headers, body in receiver.requests)
        webhooks = await api("{ webhooks { consecutiveFailures enabled } }", role="admin")
        assert webhooks["webhooks"] == [{"consecutiveFailures": 0, "enabled": True}]


async def test_a_webhook_failing_too_often_is_disabled_and_resumes_when_enabled(settings: Settings) -> None:
    async with running(fast(settings, webhook_disable_after=2, webhook_max_attempts=5)) as harness:
        api = Api(harness)
        async with Receiver(statuses=[500, 500]) as receiver:
            hook_id = await hook_and_activity(api, receiver, "bo@example.com")

            async def disabled() -> bool:
                doc = await harness.db.webhooks.find_one({})
                return doc is not None and doc["enabled"] is False

            await eventually(disabled, "the webhook to be disabled", harness)
            rows = (await api(DELIVERIES, {"id": hook_id}, role="admin"))["webhookDeliveries"]
            assert rows[0]["status"] == "pending" and len(rows[0]["attempts"]) == 2
            assert len(receiver.requests) == 2  # nothing more while disabled

            enabled = await api(
                "mutation($id: ID!) { setWebhookEnabled(id: $id, enabled: true) { enabled consecutiveFailures } }",
                {"id": hook_id},
                role="admin",
            )
            assert enabled["setWebhookEnabled"] == {"enabled": True, "consecutiveFailures": 0}

            async def delivered() -> bool:
                doc = await harness.db.webhook_deliveries.find_one({})
                return doc is not None and doc["status"] == "delivered"

            await eventually(delivered, "the delivery after re-enabling", harness)
            assert len(receiver.requests) == 3


async def test_two_server_processes_evaluate_each_activity_exactly_once(settings: Settings) -> None:
    """Two apps on one database and one stream: the consumer group hands each entry to one."""
    shared = fast(settings)
    async with running(shared) as one, running(shared) as two:
        assert one.services.automation.consumer != two.services.automation.consumer
        api = Api(one)
        await api(CREATE_RULE, {"input": {"name": "Every page", "on": "PAGE_HIT", "points": 1}}, role="admin")
        once = {"name": "First page", "on": "PAGE_HIT", "trigger": "first_page", "frequency": "ONCE"}
        await api(CREATE_RULE, {"input": once}, role="admin")
        two.services.rules.forget()
        async with one.browser() as browser:
            contact_id = (await one.event(browser, page_url="https://shop.example.com/"))["id"]
            for n in range(29):
                await (one if n % 2 else two).event(browser, page_url=f"https://shop.example.com/{n}")
        await eventually(lambda: _equals(points_of(one, contact_id), 30), "30 points", one, two)
        stream_ids = [entry_id for entry_id, _ in await one.redis.xrange(shared.stream_key)]
        await eventually(lambda: _acked(one, stream_ids[-1]), "every entry handled", one, two)
        assert await points_of(one, contact_id) == 30
        points = await one.db.activities.count_documents({"type": "points_changed"})
        assert points == 30
        # ONCE holds across processes: each knows the gate only from its own firings and the
        # database's answer.
        assert await one.db.activities.count_documents({"type": "trigger_fired"}) == 1


async def test_an_entry_a_dead_process_held_is_taken_over_and_never_counted_twice(quick: Harness) -> None:
    api = Api(quick)
    await api(CREATE_RULE, {"input": {"name": "Visit", "on": "PAGE_HIT", "points": 5}}, role="admin")
    consumer = quick.services.automation
    # A process that reads an entry and dies before acknowledging it: the entry stays pending.
    automation_task = next(t for t in asyncio.all_tasks() if t.get_name() == "automation")
    automation_task.cancel()
    await asyncio.gather(automation_task, return_exceptions=True)
    contact_id = (await quick.event(page_url="https://shop.example.com/"))["id"]
    taken = await quick.redis.xreadgroup(GROUP, "dead-process", {quick.settings.stream_key: ">"}, count=10)
    events = [json.loads(fields[b"event"]) for _, fields in taken[0][1]]
    assert [e["type"] for e in events] == ["contact_created", "page_hit"]
    # The page hit evaluated once already (the dead process fired the rule before dying).
    event = events[1]
    assert await quick.services.rules.evaluate(event, clock=0.0) == 1
    assert await points_of(quick, contact_id) == 5

    await asyncio.sleep(0.25)  # the entry must be idle past CM_AUTOMATION_CLAIM_SECONDS (0.2 s)
    assert await consumer.claim_stale() == 2
    assert await quick.services.rules.evaluate(event, clock=0.0) == 0  # and once more by hand
    assert await points_of(quick, contact_id) == 5
    pending = await quick.redis.xpending(quick.settings.stream_key, GROUP)
    assert pending["pending"] == 0


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"on": "PAGE_HIT", "urlMatches": "x" * (MAX_PATTERN + 1), "points": 1}, "urlMatches must be 1 to"),
        ({"on": "PAGE_HIT", "urlMatches": "*a" * (MAX_WILDCARDS + 1), "points": 1}, "at most 8 wildcards"),
        ({"on": "PAGE_HIT", "formId": 3, "points": 1}, "formId does not apply to PAGE_HIT"),
        ({"on": "FORM_SUBMITTED", "urlMatches": "*", "points": 1}, "urlMatches does not apply"),
        ({"on": "PAGE_HIT"}, "a rule needs an action"),
        ({"on": "PAGE_HIT", "points": 1, "frequency": "ONCE_PER_PERIOD"}, "needs periodSeconds"),
        ({"on": "PAGE_HIT", "points": 1, "frequency": "ONCE", "periodSeconds": 5}, "periodSeconds applies"),
        ({"on": "PAGE_HIT", "points": 10**7}, "points must be between"),
        ({"on": "PAGE_HIT", "trigger": "has space"}, "trigger must be"),
        ({"on": "POINTS_CHANGED", "points": 1}, "a rule can be on"),
        ({"on": "TAGS_CHANGED", "tag": "<b></b>", "points": 1}, "tag: a tag is 1 to"),
    ],
)
async def test_a_rule_with_an_unbounded_or_misplaced_condition_is_refused(
    harness: Harness, rule: dict[str, Any], message: str
) -> None:
    api = Api(harness)
    error = await api.error(CREATE_RULE, {"input": {"name": "bad", **rule}}, role="admin")
    assert message in error["message"] and error["extensions"]["code"] == "BAD_USER_INPUT"
    assert await harness.db.rules.count_documents({}) == 0


def test_patterns_are_globs_not_regular_expressions() -> None:
    spec = validate_rule(name="r", on="page_hit", url_matches="https://shop.example.com/*/cart?", points=1)
    rule = Rule.of({"_id": "1", **spec})

    def hit(url: str) -> dict[str, Any]:
        return {"type": "page_hit", "hit": {"url": url}}

    assert rule.matches(hit("https://SHOP.example.com/en/cart1"))
    assert not rule.matches(hit("https://shop.example.com/en/cart"))  # ? is one character
    literal = Rule.of(
        {"_id": "2", **validate_rule(name="r", on="page_hit", url_matches="a[b]c(d)+", points=1)}
    )
    assert literal.matches(hit("A[B]C(D)+")) and not literal.matches(hit("abc(d)+"))
    # Many stars against a long miss stays linear (fnmatch's translation does not backtrack).
    stars = Rule.of(
        {"_id": "3", **validate_rule(name="r", on="page_hit", url_matches="*a*a*a*a*a*a*a*b", points=1)}
    )
    assert not stars.matches(hit("a" * 4000))
    with pytest.raises(BadUserInput):
        validate_rule(name="r", on="page_hit", url_matches="*" * 9, points=1)


async def test_record_activity_points_order_and_filter_contacts_by_points(harness: Harness) -> None:
    api = Api(harness)
    record = """mutation($email: String!, $points: Int) { recordActivity(contact: {email: $email},
        type: "code_submission", points: $points) { id } }"""
    for email, points in (("a@example.com", 5), ("b@example.com", 30), ("c@example.com", -2)):
        await api(record, {"email": email, "points": points}, role="write")
    await api(record, {"email": "a@example.com", "points": 10}, role="write")
    query = """query($after: String) { contacts(orderBy: POINTS, first: 2, after: $after,
        filter: {pointsAtLeast: 0}) { totalCount edges { node { points fields } }
        pageInfo { endCursor hasNextPage } } }"""
    page = (await api(query))["contacts"]
    assert page["totalCount"] == 2
    assert [e["node"]["points"] for e in page["edges"]] == [30, 15]
    assert not page["pageInfo"]["hasNextPage"]
    everyone = await api(
        "{ contacts(orderBy: POINTS, first: 1) { edges { node { points } } pageInfo { endCursor } } }"
    )
    after = everyone["contacts"]["pageInfo"]["endCursor"]
    rest = await api(
        "query($after: String) { contacts(orderBy: POINTS, after: $after) { edges { node { points } } } }",
        {"after": after},
    )
    assert [e["node"]["points"] for e in rest["contacts"]["edges"]] == [15, -2]
    a = (await api('{ contacts(filter: {email: "a@example.com"}) { edges { node { id } } } }'))["contacts"]
    data = await api(TIMELINE, {"id": a["edges"][0]["node"]["id"]})
    changes = [edge["node"] for edge in data["contact"]["timeline"]["edges"]]
    assert [(c["delta"], c["total"], c["rule"]) for c in changes] == [(10, 15, None), (5, 5, None)]
    error = await api.error(record, {"email": "a@example.com", "points": 10**7}, role="write")
    assert "points must be between" in error["message"]
    # Totals beyond GraphQL Int's 32 bits (millions of recordActivity calls) are shown clamped.
    await harness.db.contacts.update_one({"fields.email": "b@example.com"}, {"$set": {"points": 2**40}})
    top = await api("{ contacts(orderBy: POINTS, first: 1) { edges { node { points } } } }")
    assert top["contacts"]["edges"][0]["node"]["points"] == 2**31 - 1


async def test_rules_and_webhooks_need_the_admin_role_and_hide_the_secret(harness: Harness) -> None:
    api = Api(harness)
    error = await api.error(
        CREATE_RULE, {"input": {"name": "r", "on": "PAGE_HIT", "points": 1}}, role="write"
    )
    assert "admin role" in error["message"]
    error = await api.error("{ webhooks { id } }", role="read")
    assert "admin role" in error["message"]
    for url, message in (
        ("ftp://example.com/x", "http:// or https://"),
        ("https://user:pw@example.com/x", "credentials"),
    ):
        error = await api.error(
            CREATE_WEBHOOK, {"input": {"url": url, "types": ["PAGE_HIT"], "secret": SECRET}}, role="admin"
        )
        assert message in error["message"]
    error = await api.error(
        CREATE_WEBHOOK,
        {"input": {"url": "https://example.com/x", "types": ["PAGE_HIT"], "secret": "short"}},
        role="admin",
    )
    assert "secret must be 16 to 256" in error["message"]
    created = await api(
        CREATE_WEBHOOK,
        {"input": {"url": "https://example.com/x", "types": ["PAGE_HIT"], "secret": SECRET}},
        role="admin",
    )
    assert "secret" not in created["createWebhook"]
    listed = await api("{ webhooks { id url types enabled } }", role="admin")
    assert listed["webhooks"] == [created["createWebhook"]]
    rules = await api("{ rules { id } }")
    assert rules["rules"] == []


async def test_erasure_takes_what_rules_and_webhooks_kept(quick: Harness) -> None:
    api = Api(quick)
    once = {"name": "First", "on": "CUSTOM_ACTIVITY", "points": 3, "frequency": "ONCE"}
    await api(CREATE_RULE, {"input": once}, role="admin")
    async with Receiver() as receiver:
        await api(
            CREATE_WEBHOOK,
            {"input": {"url": receiver.url, "types": ["POINTS_CHANGED"], "secret": SECRET}},
            role="admin",
        )
        recorded = await api(
            'mutation { recordActivity(contact: {email: "eve@example.com"}, type: "chat") { id } }',
            role="write",
        )
        assert recorded["recordActivity"]["id"]
        await eventually(
            lambda: quick.db.webhook_deliveries.find_one({"status": "delivered"}), "the delivery", quick
        )
    contact = await quick.db.contacts.find_one({})
    assert contact["points"] == 3 and await quick.db.rule_gates.count_documents({}) == 1
    await api("mutation($id: ID!) { deleteContact(id: $id) }", {"id": contact["_id"]}, role="write")
    assert await quick.db.rule_gates.count_documents({}) == 0
    assert await quick.db.webhook_deliveries.count_documents({"contact_id": contact["_id"]}) == 0
    assert await quick.db.activities.count_documents({"contact_id": contact["_id"]}) == 0


async def test_with_automation_off_no_consumer_runs(settings: Settings) -> None:
    async with running(fast(settings, automation=False)):
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert "automation" not in names and "webhooks" not in names
    async with running(fast(settings)):
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert {"automation", "webhooks"} <= names


async def test_webhook_urls_inside_the_network_or_malformed_are_refused(harness: Harness) -> None:
    """The default: no receivers on loopback, private or link-local addresses (SSRF)."""
    api = Api(harness)
    for url, message in (
        ("http://127.0.0.1:8080/hook", "CM_WEBHOOK_ALLOW_PRIVATE"),
        ("http://localhost/hook", "CM_WEBHOOK_ALLOW_PRIVATE"),
        ("http://10.1.2.3/hook", "CM_WEBHOOK_ALLOW_PRIVATE"),
        ("http://169.254.169.254/latest/meta-data", "CM_WEBHOOK_ALLOW_PRIVATE"),
        ("http://[::1]/hook", "CM_WEBHOOK_ALLOW_PRIVATE"),
        ("http://[::1/hook", "http:// or https://"),
        (f"http://{'a' * 64}.example.com/hook", "http:// or https://"),
        ("http://example.com:99999/hook", "http:// or https://"),
    ):
        error = await api.error(
            CREATE_WEBHOOK, {"input": {"url": url, "types": ["PAGE_HIT"], "secret": SECRET}}, role="admin"
        )
        assert message in error["message"], (url, error)
    assert await harness.db.webhooks.count_documents({}) == 0


async def test_a_host_name_that_resolves_inside_the_network_gets_nothing(settings: Settings) -> None:
    """A name passes validation; its addresses are checked when connecting (also after a DNS
    change), so it cannot reach a receiver on loopback."""
    host = socket.gethostname()
    address = socket.getaddrinfo(host, 80)[0][4][0]
    assert ipaddress.ip_address(address).is_loopback or ipaddress.ip_address(address).is_private, address
    async with running(fast(settings, webhook_allow_private=False)) as harness, Receiver() as receiver:
        api = Api(harness)
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]
        url = f"http://{host}:{port}/hook"
        await api(
            CREATE_WEBHOOK,
            {"input": {"url": url, "types": ["CUSTOM_ACTIVITY"], "secret": SECRET}},
            role="admin",
        )
        await api(
            'mutation { recordActivity(contact: {email: "x@example.com"}, type: "chat") { id } }',
            role="write",
        )
        delivery = await eventually(
            lambda: harness.db.webhook_deliveries.find_one({"attempts.0": {"$exists": True}}),
            "an attempt",
            harness,
        )
        assert "inside the network" in delivery["attempts"][0]["error"]
        assert receiver.requests == []


async def test_activity_times_out_of_range_are_refused_and_odd_events_do_not_stop_the_consumer(
    quick: Harness,
) -> None:
    api = Api(quick)
    record = """mutation($at: DateTime) { recordActivity(contact: {email: "t@example.com"}, type: "chat",
        occurredAt: $at) { id } }"""
    for at in ("1960-01-01T00:00:00Z", "2107-01-01T00:00:00Z"):
        error = await api.error(record, {"at": at}, role="write")
        assert "occurredAt must be between 2000-01-01" in error["message"]
    await api(
        CREATE_RULE,
        {
            "input": {
                "name": "Chat",
                "on": "CUSTOM_ACTIVITY",
                "points": 1,
                "frequency": "ONCE_PER_PERIOD",
                "periodSeconds": 31_000_000,
            }
        },
        role="admin",
    )
    # Other producers may append to the stream: times far outside ObjectId's and datetime's range.
    for n, at in enumerate(("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "not a time")):
        event = {
            "type": "custom_activity",
            "contact_id": "nobody",
            "activity_id": f"{n:024x}",
            "occurred_at": at,
            "activity_type": "chat",
        }
        await quick.redis.xadd(quick.settings.stream_key, {"event": json.dumps(event)})
    await api(record, {"at": None}, role="write")
    contact = await quick.db.contacts.find_one({})
    assert await eventually(
        lambda: _equals(points_of(quick, contact["_id"]), 1), "the later activity's point", quick
    )
    stream_ids = [entry_id for entry_id, _ in await quick.redis.xrange(quick.settings.stream_key)]
    await eventually(lambda: _acked(quick, stream_ids[-1]), "every entry handled", quick)
    assert not quick.services.automation.skipped


async def test_a_slow_receiver_does_not_hold_up_the_consumer(quick: Harness) -> None:
    """A first attempt waits a second at most; the sender then tries with the full timeout."""
    api = Api(quick)
    async with Receiver(delay=1.5) as receiver:
        hook_id = await hook_and_activity(api, receiver, "slow@example.com")

        async def delivered() -> Any:
            rows = (await api(DELIVERIES, {"id": hook_id}, role="admin"))["webhookDeliveries"]
            return rows if rows and rows[0]["status"] == "delivered" else None

        rows = await eventually(delivered, "the delivery", quick)
        assert [a["error"] for a in rows[0]["attempts"]] == [None]  # the cut-short one is no failure
        assert len(receiver.requests) == 2  # the same delivery twice: X-CM-Delivery deduplicates
        assert len({headers["x-cm-delivery"] for headers, _ in receiver.requests}) == 1
        hooks = await api("{ webhooks { consecutiveFailures enabled } }", role="admin")
        assert hooks["webhooks"] == [{"consecutiveFailures": 0, "enabled": True}]


async def test_a_firings_stream_entries_survive_a_stop_right_after_its_commit(settings: Settings) -> None:
    """The entries of a firing are written to the outbox in its transaction: a process that stops
    before appending them to the stream leaves them for any other process's republisher."""
    shared = fast(settings)
    async with running(shared) as first:
        api = Api(first)
        await api(
            CREATE_RULE,
            {"input": {"name": "Chat", "on": "CUSTOM_ACTIVITY", "trigger": "chatted"}},
            role="admin",
        )
        republisher = next(t for t in asyncio.all_tasks() if t.get_name() == "outbox-republisher")
        republisher.cancel()  # this process will never append anything from the outbox again
        await asyncio.gather(republisher, return_exceptions=True)
        await api(
            'mutation { recordActivity(contact: {email: "o@example.com"}, type: "chat") { id } }',
            role="write",
        )
        await eventually(lambda: first.db.outbox.find_one({}), "the firing's outbox entry", first)
        assert not [e for e in await first.stream() if e["type"] == "trigger_fired"]
        async with running(shared) as second:

            async def appended() -> list[dict[str, Any]]:
                return [e for e in await second.stream() if e["type"] == "trigger_fired"]

            events = await eventually(
                appended,
                "the entry on the stream",
                first,
                second,
                events=(second.services.publisher.drained,),
            )
            assert events[0]["trigger"] == "chatted" and await second.db.outbox.count_documents({}) == 0


async def test_rules_catch_up_once_each_after_a_redis_outage(settings: Settings, tmp_path: Any) -> None:
    """A Redis of the test's own, really stopped and started again: the activities of the outage
    wait in the outbox, reach the stream afterwards, and the consumer (paused meanwhile, not
    stopped) gives each its point once."""
    from contact_monitor.embedded import start_redis

    server = start_redis(tmp_path / "redis-rules")
    try:
        async with running(fast(settings, redis_url=server.uri)) as h:
            api = Api(h)
            await api(
                CREATE_RULE, {"input": {"name": "Chat", "on": "CUSTOM_ACTIVITY", "points": 1}}, role="admin"
            )
            record = 'mutation { recordActivity(contact: {email: "r@example.com"}, type: "chat") { id } }'
            await api(record, role="write")
            contact = await h.db.contacts.find_one({})
            assert await eventually(lambda: _equals(points_of(h, contact["_id"]), 1), "the first point", h)
            server.stop()
            for _ in range(3):
                await api(record, role="write")  # recorded; the stream entries wait in the outbox
            assert await h.services.storage.outbox.depth() >= 3
            assert await points_of(h, contact["_id"]) == 1
            server = start_redis(tmp_path / "redis-rules", port=server.port)
            assert await eventually(
                lambda: _equals(points_of(h, contact["_id"]), 4), "the points of the outage", h
            )
            assert await h.db.activities.count_documents({"type": "points_changed"}) == 4
    finally:
        server.stop()


async def test_a_rule_on_an_added_tag_removes_another(quick: Harness) -> None:
    api = Api(quick)
    rule = {
        "name": "Upgrade",
        "on": "TAGS_CHANGED",
        "tag": "VIP",
        "removeTags": ["trial"],
        "addTags": ["paid"],
    }
    await api(CREATE_RULE, {"input": rule}, role="admin")
    created = await api(
        'mutation { recordActivity(contact: {email: "t@example.com"}, type: "signup") { id } }', role="write"
    )
    assert created["recordActivity"]["id"]
    contact = await quick.db.contacts.find_one({})
    tag = "mutation($id: ID!, $add: [String!]) { tagContact(id: $id, add: $add) { tags } }"
    await api(tag, {"id": contact["_id"], "add": ["Trial"]}, role="write")
    await api(tag, {"id": contact["_id"], "add": ["vip"]}, role="write")  # the rule's tag, another case

    async def tags() -> list[str] | None:
        doc = await quick.db.contacts.find_one({"_id": contact["_id"]})
        return doc["tags"] if doc and "paid" in doc["tags"] else None

    assert sorted(await eventually(tags, "the rule's tags", quick)) == ["paid", "vip"]
    entry = await quick.db.activities.find_one({"type": "tags_changed", "data.rule_id": {"$exists": True}})
    assert entry["data"]["added"] == ["paid"] and entry["data"]["removed"] == ["Trial"]


async def test_a_batch_of_firings_leaves_each_contact_right_and_cached_as_committed(quick: Harness) -> None:
    """Three visitors' cart views in one batch: two gain the same points (written together), the
    third matches a second rule too (points and a tag). Each ends as its rules say, and this
    process keeps the contacts it had cached in their committed state: their next hit reads
    nothing from MongoDB."""
    api = Api(quick)
    cart = {"name": "Cart", "on": "PAGE_HIT", "urlMatches": "*/cart*", "points": 10}
    big = {"name": "Big cart", "on": "PAGE_HIT", "urlMatches": "*/cart/big", "points": 5, "addTags": ["vip"]}
    for rule in (cart, big):
        await api(CREATE_RULE, {"input": rule}, role="admin")
    cache = quick.services.storage.contacts.cache
    await asyncio.wait_for(cache.on.wait(), 10)
    async with contextlib.AsyncExitStack() as stack:
        browsers = [
            await stack.enter_async_context(quick.browser(ip=f"203.0.113.{20 + n}")) for n in range(3)
        ]
        ids = [
            (await quick.event(browser, page_url=f"https://shop.example.com/home/{n}"))["id"]
            for n, browser in enumerate(browsers)
        ]
        events = [
            {
                "type": "page_hit",
                "contact_id": contact_id,
                "activity_id": f"{n + 1:024x}",
                "occurred_at": "2026-11-28T12:00:00Z",
                "hit": {"url": f"https://shop.example.com/cart{'/big' if n == 2 else ''}"},
            }
            for n, contact_id in enumerate(ids)
        ]
        assert await quick.services.rules.evaluate_batch(events, 0.0) == 4
        for contact_id, points, tags in zip(ids, (10, 10, 15), ([], [], ["vip"]), strict=True):
            stored = await quick.db.contacts.find_one({"_id": contact_id})
            assert (stored["points"], stored["tags"]) == (points, tags)
            assert cache.get(contact_id) == stored  # the committed document, not a stale copy
        misses = cache.misses
        for browser in browsers:
            await quick.pixel(browser, page_url="https://shop.example.com/after")
        assert cache.misses == misses
    # Evaluated again (as after a crash before the acknowledgement): nothing more.
    assert await quick.services.rules.evaluate_batch(events, 0.0) == 0
    assert [await points_of(quick, contact_id) for contact_id in ids] == [10, 10, 15]
