"""URLs of the connection flows (namespace ``connectors``), included at the hub's root."""

from django.urls import path

from connectors import views

app_name = "connectors"

urlpatterns = [
    path("connections/<slug:provider>/connect/", views.connect, name="connect"),
    # The OAuth redirect URI registered with each provider: HUB_BASE_URL + this path.
    path("connections/<slug:provider>/callback/", views.callback, name="callback"),
    path("connections/<slug:provider>/api-key/", views.api_key, name="api-key"),
    path("connections/<int:pk>/disconnect/", views.disconnect, name="disconnect"),
    path("connections/<int:pk>/reconnect/", views.reconnect, name="reconnect"),
]
