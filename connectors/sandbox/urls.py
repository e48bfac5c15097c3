"""URLs of the sandbox mount; the hub includes them under ``sandbox/`` when SANDBOX_ENABLED."""

from django.urls import path

from connectors.sandbox.views import sandbox_view

app_name = "sandbox"

urlpatterns = [
    path("<slug:slug>/", sandbox_view, name="root"),
    path("<slug:slug>/<path:path>", sandbox_view, name="api"),
]
