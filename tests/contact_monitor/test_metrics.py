"""/metrics: Prometheus' text format, behind an API key."""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_what_tracking_did(harness):
    await harness.pixel(page_url="p")
    await harness.pixel(page_url="q")
    async with harness.browser(user_agent="curl/8.0") as bot:
        await harness.pixel(bot, page_url="r")
    assert (await harness.client.get("/metrics")).status_code == 401
    key = await harness.services.storage.api_keys.create("scraper", "read")
    response = await harness.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    recorded = found[("cm_tracking_requests_total", (("endpoint", "pixel"), ("result", "recorded")))]
    skipped = found[("cm_tracking_requests_total", (("endpoint", "pixel"), ("result", "skipped")))]
    assert (recorded, skipped) == (2, 1)
    assert found[("cm_insert_batch_size_count", (("collection", "hits"),))] >= 1
    assert found[("cm_insert_batch_size_sum", (("collection", "hits"),))] == 2
    assert found[("cm_subscribers", ())] == 0 and found[("cm_websockets", ())] == 0
