from contact_monitor.embedded import STATE_FILE, embedded_services, running_servers, start_redis


def test_configured_uris_start_nothing(tmp_path):
    with embedded_services(
        tmp_path, "mongodb://db.example:27017", "redis://cache.example:6379/0"
    ) as overrides:
        assert overrides == {}
        assert not (tmp_path / STATE_FILE).exists()
    assert list((tmp_path).iterdir()) == []


def test_embedded_redis_only_when_mongodb_is_configured(tmp_path):
    with embedded_services(tmp_path, "mongodb://db.example:27017", None) as overrides:
        assert set(overrides) == {"CM_REDIS_URL"}
        assert set(running_servers(tmp_path)) == {"redis"}
    assert running_servers(tmp_path) == {}


def test_stale_state_file_is_ignored(tmp_path):
    (tmp_path / STATE_FILE).write_text(
        '{"redis": {"pid": 999999, "uri": "redis://127.0.0.1:1/0", "port": 1}}'
    )
    assert running_servers(tmp_path) == {}
    (tmp_path / STATE_FILE).write_text("not json")
    assert running_servers(tmp_path) == {}


def test_redis_data_survives_a_restart(tmp_path):
    import redis

    server = start_redis(tmp_path)
    with redis.Redis.from_url(server.uri) as client:
        client.xadd("cm:activity", {"event": "{}"})
    server.stop()
    server = start_redis(tmp_path)
    with redis.Redis.from_url(server.uri) as client:
        assert client.xlen("cm:activity") == 1
    server.stop()
