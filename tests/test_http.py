"""armor_notify.http: sessions that read the environment once, with the same result requests gives."""

from __future__ import annotations

import pytest

from armor_notify.http import new_session


def test_proxies_and_ca_bundle_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = new_session("https://events.pagerduty.com/v2/enqueue", {"User-Agent": "x"})
    assert session.proxies.get("https") == "http://127.0.0.1:3128"
    assert session.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert session.headers["User-Agent"] == "x"
    assert session.trust_env is False  # not read again on every request


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "hooks.slack.com")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = new_session("https://hooks.slack.com/services/T/B/X")
    assert "https" not in session.proxies
    assert session.verify is True
