"""No N+1: a page of contacts with tags, last hit and devices costs a constant number of queries."""

import dataclasses

from pymongo import monitoring

from api.context import Context
from api.schema import schema
from contact_monitor.storage import Storage

PAGE = """query($first: Int) { contacts(first: $first) { totalCount edges { node {
    id tags lastHit { url title } devices { trackingId fingerprint { hash } } } } } }"""


class CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def count_queries(harness, first: int, query: str = PAGE) -> tuple[int, list]:
    counter = CommandCounter()
    settings = harness.settings
    storage = Storage.connect(settings.mongodb_uri, settings.mongodb_db, event_listeners=[counter])
    try:
        services = dataclasses.replace(harness.services, storage=storage)
        await storage.db.command("ping")
        counter.commands.clear()
        result = await schema.execute(
            query,
            variable_values={"first": first},
            context_value=Context(services=services, hub=harness.hub, role="read", key_name="t"),
        )
    finally:
        await storage.close()
    assert result.errors is None, result.errors
    return len(counter.commands), result.data["contacts"]["edges"]


async def test_a_page_of_50_costs_as_many_queries_as_a_page_of_5(harness):
    for i in range(50):
        async with harness.browser() as browser:
            await harness.event(
                browser, page_url=f"https://s.test/{i}", tags=f"t{i % 3}", fingerprint=f"fp{i}"
            )
    small, small_edges = await count_queries(harness, 5)
    large, large_edges = await count_queries(harness, 50)
    assert len(small_edges) == 5 and len(large_edges) == 50
    assert all(edge["node"]["lastHit"]["url"].startswith("https://s.test/") for edge in large_edges)
    assert all(edge["node"]["devices"][0]["fingerprint"]["hash"] for edge in large_edges)
    assert large == small
    assert large <= 5  # contacts page, count, devices batch, last-hit batch


EVERYTHING = """query($first: Int) { contacts(first: $first) { edges { node {
    id hits(first: 3) { totalCount edges { node { url } } }
    timeline(first: 4) { edges { node { __typename } } pageInfo { hasNextPage } }
    utmTags { title } ipAddresses } } } }"""


async def test_hits_timeline_utm_and_ips_of_a_page_cost_a_constant_number_of_queries(harness):
    for i in range(30):
        async with harness.browser(ip=f"203.0.113.{i + 1}") as browser:
            for j in range(2 + i % 3):
                await harness.event(browser, page_url=f"https://s.test/{i}/{j}?utm_source=s{i}", tags=f"t{j}")
    small, small_edges = await count_queries(harness, 5, EVERYTHING)
    large, large_edges = await count_queries(harness, 30, EVERYTHING)
    assert len(small_edges) == 5 and len(large_edges) == 30
    assert large == small, (small, large)
    for edge in large_edges:
        node = edge["node"]
        visits = node["hits"]["totalCount"]
        assert 2 <= visits <= 4 and len(node["hits"]["edges"]) == min(visits, 3)
        assert len(node["ipAddresses"]) == 1 and len(node["utmTags"]) == visits
        # the timeline merges hits, UTM records and tag changes, newest first, cut at 4
        assert len(node["timeline"]["edges"]) == 4 and node["timeline"]["pageInfo"]["hasNextPage"]
