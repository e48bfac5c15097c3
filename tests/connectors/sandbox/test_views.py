"""The Django mount of the sandboxes: ``/sandbox/<slug>/<path>`` reaches ``get_sandbox(slug)``.

Runs under pytest-django with the hub's settings, or bare (``-p no:django``) with minimal ones;
it never touches the database.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings

if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
    settings.configure(ALLOWED_HOSTS=["testserver"], SECRET_KEY="sandbox-view-test", ROOT_URLCONF=__name__)

from django.http import Http404  # noqa: E402
from django.test import RequestFactory  # noqa: E402

from connectors.sandbox.registry import get_sandbox  # noqa: E402
from connectors.sandbox.views import sandbox_view  # noqa: E402

urlpatterns: list[object] = []


def test_view_forwards_to_the_sandbox_and_back() -> None:
    api = get_sandbox("qonto")
    request = RequestFactory().get(
        "/sandbox/qonto/v2/organization",
        HTTP_AUTHORIZATION=api.api_key_header,  # type: ignore[attr-defined]
    )
    response = sandbox_view(request, slug="qonto", path="v2/organization")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert b'"organization"' in response.content


def test_view_builds_absolute_links_under_the_mount() -> None:
    query = "client_id=hub&redirect_uri=https%3A%2F%2Fhub.example%2Fcb&response_type=code&scope=organization.read&state=s"
    request = RequestFactory().get(f"/sandbox/qonto/oauth2/auth?{query}")
    response = sandbox_view(request, slug="qonto", path="oauth2/auth")
    assert response.status_code == 200
    assert b'action="http://testserver/sandbox/qonto/oauth2/auth"' in response.content
    posted = RequestFactory().post(  # a browser posts the consent form urlencoded
        f"/sandbox/qonto/oauth2/auth?{query}",
        data="decision=authorize",
        content_type="application/x-www-form-urlencoded",
    )
    redirect = sandbox_view(posted, slug="qonto", path="oauth2/auth")
    assert redirect.status_code == 302 and redirect["Location"].startswith("https://hub.example/cb?code=")


def test_unknown_slug_is_404() -> None:
    with pytest.raises(Http404):
        sandbox_view(RequestFactory().get("/sandbox/nope/x"), slug="nope", path="x")
