"""``connectors.http``: parsing answers and the session's environment settings."""

from __future__ import annotations

import pytest
import requests
import responses

from connectors import http


@responses.activate
def test_json_body_parses_and_hands_what_orjson_refuses_to_requests():
    responses.get("https://api.test/ok", body=b'{"amount": 12.3, "label": "caf\xc3\xa9"}')
    responses.get("https://api.test/nan", body=b'{"rate": NaN}')
    responses.get("https://api.test/html", body=b"<html>login</html>", content_type="text/html")
    assert http.json_body(requests.get("https://api.test/ok")) == {"amount": 12.3, "label": "café"}
    # NaN is not JSON, but requests' parser takes it, as the hub did before orjson.
    assert http.json_body(requests.get("https://api.test/nan"))["rate"] != 0
    with pytest.raises(ValueError):
        http.json_body(requests.get("https://api.test/html"))


def test_the_hub_session_reads_the_proxy_environment_once_per_host(monkeypatch):
    session = http.HubSession()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    first = session.merge_environment_settings("https://api.test/a", {}, None, None, None)
    assert first["proxies"]["https"] == "http://proxy.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:3128")
    # Within a minute the same host keeps its settings; another host reads the environment.
    assert session.merge_environment_settings("https://api.test/b?x=1", {}, None, None, None) == first
    other = session.merge_environment_settings("https://other.test/", {}, None, None, None)
    assert other["proxies"]["https"] == "http://other.example:3128"
    monkeypatch.setattr(http.HubSession, "ENV_TTL", -1.0)
    assert session.merge_environment_settings("https://api.test/a", {}, None, None, None)["proxies"]["https"] == (
        "http://other.example:3128"
    )
    # Explicit proxies are never cached.
    given = session.merge_environment_settings("https://api.test/a", {"https": "http://given:1"}, None, None, None)
    assert given["proxies"]["https"] == "http://given:1"


@responses.activate
def test_a_netrc_file_never_replaces_the_credentials_a_connector_sends(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.test login someone password elses\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    responses.get("https://api.test/v2/organization", json={"organization": {}})
    # What plain requests does: the file's login replaces the header.
    requests.Session().get("https://api.test/v2/organization", headers={"Authorization": "acme:secret"})
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")
    http.HubSession().get("https://api.test/v2/organization", headers={"Authorization": "acme:secret"})
    assert responses.calls[1].request.headers["Authorization"] == "acme:secret"
    # An explicit auth still applies (an OAuth token exchange's client credentials, say).
    http.HubSession().get("https://api.test/v2/organization", auth=("client", "pw"))
    assert responses.calls[2].request.headers["Authorization"].startswith("Basic ")
