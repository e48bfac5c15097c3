"""Where providers deliver webhooks: ``/webhooks/<provider slug>/<connection's endpoint uuid>/``."""

from __future__ import annotations

from django.urls import path

from connectors import webhooks

urlpatterns = [
    path("<slug:slug>/<uuid:endpoint>/", webhooks.receive, name="webhook"),
]
