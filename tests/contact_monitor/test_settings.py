import ipaddress
from pathlib import Path

import pytest

from contact_monitor.settings import Settings, SettingsError


def test_defaults():
    settings = Settings.from_env({})
    assert settings.mongodb_uri is None and settings.redis_url is None
    assert settings.mongodb_db == "contact_monitor"
    assert settings.data_dir == Path.home() / ".local" / "share" / "contact-monitor"
    assert settings.cookie_secure is True
    assert settings.anonymize_ip == "off" and settings.track_by_ip is False and settings.respect_dnt is False
    assert settings.stream_key == "cm:activity"
    assert settings.max_body_bytes == 65536


def test_the_data_directory_is_per_user_wherever_the_command_runs():
    assert Settings.from_env({"HOME": "/home/ann"}).data_dir == Path("/home/ann/.local/share/contact-monitor")
    xdg = {"HOME": "/home/ann", "XDG_DATA_HOME": "/data/ann"}
    assert Settings.from_env(xdg).data_dir == Path("/data/ann/contact-monitor")
    assert Settings.from_env({**xdg, "CM_DATA_DIR": "./here"}).data_dir == Path("./here")


def test_everything_from_the_environment():
    settings = Settings.from_env(
        {
            "CM_MONGODB_URI": "mongodb://db:27017",
            "CM_MONGODB_DB": "tracking",
            "CM_REDIS_URL": "redis://cache:6379/1",
            "CM_REDIS_PREFIX": "shop1:",
            "CM_DATA_DIR": "/var/lib/cm",
            "CM_CORS_ORIGINS": "https://a.test, https://*.b.test",
            "CM_COOKIE_SECURE": "false",
            "CM_COOKIE_DOMAIN": "b.test",
            "CM_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "CM_ANONYMIZE_IP": "true",
            "CM_DO_NOT_TRACK_IPS": "192.168.0.0/16,2001:db8::/32,172.15.1.*",
            "CM_RESPECT_DNT": "yes",
            "CM_FILTER_BOTS": "0",
            "CM_STREAM_MAXLEN": "5000",
            "CM_MAX_BODY_BYTES": "131072",
        }
    )
    assert settings.mongodb_uri == "mongodb://db:27017" and settings.mongodb_db == "tracking"
    assert settings.stream_key == "shop1:activity"
    assert settings.cors_origins == ("https://a.test", "https://*.b.test")
    assert settings.cookie_secure is False and settings.cookie_domain == "b.test"
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert settings.anonymize_ip == "truncate"
    assert len(settings.do_not_track_networks) == 2 and settings.do_not_track_patterns == ("172.15.1.*",)
    assert settings.respect_dnt and not settings.filter_bots
    assert (settings.stream_maxlen, settings.max_body_bytes) == (5000, 131072)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CM_COOKIE_SECURE": "maybe"}, "CM_COOKIE_SECURE must be true or false"),
        ({"CM_STREAM_MAXLEN": "lots"}, "CM_STREAM_MAXLEN must be an integer"),
        ({"CM_STREAM_MAXLEN": "0"}, "CM_STREAM_MAXLEN must be a positive"),
        ({"CM_MAX_BODY_BYTES": "10"}, "at least 1024"),
        ({"CM_TRUSTED_PROXIES": "proxy.local"}, "CM_TRUSTED_PROXIES"),
        ({"CM_DO_NOT_TRACK_IPS": "office"}, "CM_DO_NOT_TRACK_IPS"),
        ({"CM_ANONYMIZE_IP": "half"}, "CM_ANONYMIZE_IP"),
        ({"CM_TRACK_BY_IP": "true", "CM_ANONYMIZE_IP": "truncate"}, "cannot be combined"),
        ({"CM_CORS_ORIGINS": "https://www.example.com/"}, "CM_CORS_ORIGINS: 'https://www.example.com/'"),
        ({"CM_CORS_ORIGINS": "www.example.com"}, "CM_CORS_ORIGINS: 'www.example.com' is not an origin"),
        ({"CM_DASHBOARD_ORIGINS": "http://dash.test/app"}, "CM_DASHBOARD_ORIGINS"),
        ({"CM_PROXY_HEADER": "x-real-ip"}, "CM_PROXY_HEADER"),
        ({"CM_WS_MAX_PER_KEY": "0"}, "CM_WS_MAX_PER_KEY"),
        ({"CM_WS_STUCK_SECONDS": "0.05"}, "CM_WS_STUCK_SECONDS must be between 0.1 and 86400"),
        ({"CM_WS_STUCK_SECONDS": "86401"}, "CM_WS_STUCK_SECONDS"),
        ({"CM_LIVE_LINGER_MS": "-1"}, "CM_LIVE_LINGER_MS must be between 0 and 1000"),
        ({"CM_LIVE_LINGER_MS": "1001"}, "CM_LIVE_LINGER_MS"),
        ({"CM_TRACK_TIMEOUT_SECONDS": "0.09"}, "CM_TRACK_TIMEOUT_SECONDS must be between 0.1 and 60"),
        ({"CM_TRACK_TIMEOUT_SECONDS": "61"}, "CM_TRACK_TIMEOUT_SECONDS"),
        ({"CM_CONTACT_CACHE_SIZE": "-1"}, "CM_CONTACT_CACHE_SIZE must be between 0 and 10000000"),
        ({"CM_CONTACT_CACHE_SIZE": "10000001"}, "CM_CONTACT_CACHE_SIZE"),
        ({"CM_SHARED_FEEDS": "sometimes"}, "CM_SHARED_FEEDS must be true or false"),
        ({"CM_MONGODB_URI": "localhost:27017"}, "CM_MONGODB_URI must start with mongodb://"),
        ({"CM_MONGODB_URI": "mongodb://ann:p@ss:w@db"}, "CM_MONGODB_URI is not a valid MongoDB URI"),
        ({"CM_MONGODB_URI": "mongodb://db/?w=banana&journal=maybe"}, "CM_MONGODB_URI is not a valid"),
        ({"CM_REDIS_URL": "localhost:6379"}, "CM_REDIS_URL must start with redis://"),
        ({"CM_AUTOMATION": "perhaps"}, "CM_AUTOMATION must be true or false"),
        ({"CM_AUTOMATION_LINGER_MS": "-1"}, "CM_AUTOMATION_LINGER_MS must be between 0 and 5000"),
        ({"CM_AUTOMATION_LINGER_MS": "5001"}, "CM_AUTOMATION_LINGER_MS"),
        ({"CM_AUTOMATION_CLAIM_SECONDS": "0.09"}, "CM_AUTOMATION_CLAIM_SECONDS must be between 0.1"),
        ({"CM_WEBHOOK_TIMEOUT_SECONDS": "61"}, "CM_WEBHOOK_TIMEOUT_SECONDS must be between 0.1 and 60"),
        ({"CM_WEBHOOK_RETRY_SECONDS": "3601"}, "CM_WEBHOOK_RETRY_SECONDS must be between 0.01 and 3600"),
        ({"CM_WEBHOOK_MAX_ATTEMPTS": "0"}, "CM_WEBHOOK_MAX_ATTEMPTS must be between 1 and 100"),
        ({"CM_WEBHOOK_MAX_ATTEMPTS": "101"}, "CM_WEBHOOK_MAX_ATTEMPTS"),
        ({"CM_WEBHOOK_DISABLE_AFTER": "0"}, "CM_WEBHOOK_DISABLE_AFTER must be between 1 and 10000"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_a_bad_uri_is_refused_without_repeating_it():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"CM_MONGODB_URI": "mongodb://ann:secret:x@db"})
    assert "secret" not in str(refused.value)
    fine = Settings.from_env(
        {
            "CM_MONGODB_URI": "mongodb+srv://cluster.example.com/?retryWrites=true",
            "CM_REDIS_URL": "rediss://r:6380/1",
        }
    )
    assert fine.mongodb_uri and fine.redis_url


def test_tracking_limits_at_their_bounds():
    low = Settings.from_env({"CM_TRACK_TIMEOUT_SECONDS": "0.1", "CM_CONTACT_CACHE_SIZE": "0"})
    assert (low.track_timeout_seconds, low.contact_cache_size) == (0.1, 0)
    high = Settings.from_env({"CM_TRACK_TIMEOUT_SECONDS": "60", "CM_CONTACT_CACHE_SIZE": "10000000"})
    assert (high.track_timeout_seconds, high.contact_cache_size) == (60, 10_000_000)
    assert (Settings().track_timeout_seconds, Settings().contact_cache_size) == (3.0, 10_000)


def test_live_feed_limits_at_their_bounds():
    low = Settings.from_env({"CM_WS_STUCK_SECONDS": "0.1", "CM_LIVE_LINGER_MS": "0", "CM_SHARED_FEEDS": "no"})
    assert (low.ws_stuck_seconds, low.live_linger_ms, low.shared_feeds) == (0.1, 0, False)
    high = Settings.from_env({"CM_WS_STUCK_SECONDS": "86400", "CM_LIVE_LINGER_MS": "1000"})
    assert (high.ws_stuck_seconds, high.live_linger_ms, high.shared_feeds) == (86400, 1000, True)
    assert (Settings().ws_stuck_seconds, Settings().live_linger_ms) == (30.0, 10)


def test_origins_may_be_exact_wildcards_or_any():
    settings = Settings.from_env(
        {
            "CM_CORS_ORIGINS": "https://www.example.com, https://*.example.org:8443, *",
            "CM_DASHBOARD_ORIGINS": "",
        }
    )
    assert settings.cors_origins == ("https://www.example.com", "https://*.example.org:8443", "*")


def test_create_app_needs_both_uris():
    from contact_monitor.app import create_app

    with pytest.raises(SettingsError, match="contact-monitor serve"):
        create_app(Settings())


def test_public_url():
    assert (
        Settings.from_env({"CM_PUBLIC_URL": "https://track.example.com/"}).public_url
        == "https://track.example.com"
    )
    for bad in ("track.example.com", "ftp://x.test", "https://x.test/sub/path"):
        with pytest.raises(SettingsError, match="CM_PUBLIC_URL"):
            Settings.from_env({"CM_PUBLIC_URL": bad})


def test_automation_limits_at_their_bounds():
    low = Settings.from_env(
        {
            "CM_AUTOMATION_LINGER_MS": "0",
            "CM_WEBHOOK_MAX_ATTEMPTS": "1",
            "CM_WEBHOOK_DISABLE_AFTER": "1",
            "CM_WEBHOOK_RETRY_SECONDS": "0.01",
        }
    )
    assert (low.automation_linger_ms, low.webhook_max_attempts, low.webhook_disable_after) == (0, 1, 1)
    high = Settings.from_env(
        {"CM_AUTOMATION_LINGER_MS": "5000", "CM_WEBHOOK_MAX_ATTEMPTS": "100", "CM_AUTOMATION": "false"}
    )
    assert (high.automation_linger_ms, high.webhook_max_attempts, high.automation) == (5000, 100, False)
