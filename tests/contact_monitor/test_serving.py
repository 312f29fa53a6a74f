"""`contact-monitor serve` over real HTTP: request targets past httptools' 64 KiB limit."""

import http.client

import pytest
from pymongo import MongoClient

from contact_monitor.embedded import free_port
from contact_monitor.serving import MAX_TARGET_BYTES, cut_target
from tests.conftest import CHROME
from tests.servers import Store, start_server, stop_server

GIF_BYTES = 43


def test_a_long_target_is_cut_at_its_last_complete_parameter():
    assert cut_target(b"/p?a=1&b=2", limit=8) == b"/p?a=1"
    assert cut_target(b"/p?a=1&b=2") == b"/p?a=1&b=2"
    assert cut_target(b"/p?" + b"x" * 100, limit=10) == b"/p"
    assert cut_target(b"/" + b"x" * 100, limit=10) == b"/" + b"x" * 9


@pytest.fixture(scope="module")
def server(mongodb_uri, redis_url, tmp_path_factory):
    store = Store.new(mongodb_uri, redis_url, "serve")
    port = free_port()
    process = start_server(store.env(CM_DATA_DIR=str(tmp_path_factory.mktemp("serve"))), port)
    try:
        yield port, store.database
    finally:
        stop_server(process)
        store.drop()


@pytest.mark.parametrize("size", [MAX_TARGET_BYTES + 1, 70_000, 200_000])
def test_the_pixel_answers_its_gif_and_records_what_fits_past_64_kib(server, mongodb_uri, size):
    port, database = server
    target = "/mtracking.gif?page_url=long-target&pad=" + "y" * 100 + "&junk=" + "z" * size
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", target)
        connection.putheader("User-Agent", CHROME)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200 and response.getheader("content-type") == "image/gif"
    assert len(body) == GIF_BYTES
    with MongoClient(mongodb_uri) as client:
        hit = client[database].hits.find_one({"url": "long-target"}, sort=[("occurred_at", -1)])
    assert hit is not None and "junk" not in hit["query"] and hit["query"]["pad"] == "y" * 100


def test_other_paths_still_refuse_a_target_past_64_kib(server):
    port, _ = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", "/mtc/event?page_url=p&junk=" + "z" * 70_000)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 400
