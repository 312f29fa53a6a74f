async def test_pixel_records_a_hit(harness):
    r = await harness.pixel(page_url="https://example.com/a", page_title="A")
    assert r.content[:6] == b"GIF89a"
    hit = await harness.db.hits.find_one()
    assert hit["url"] == "https://example.com/a"
    print(await harness.stream())
