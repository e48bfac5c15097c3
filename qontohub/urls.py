"""The hub's URL map."""

from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import accountant.api  # noqa: F401
import connectors.api  # noqa: F401  (registers its endpoints on the router)
import reconciliation.api  # noqa: F401  (registers its endpoints on the router)
from qontohub import views
from qontohub.api import router

# The admin uses the same allauth login (and its rate limits) as the rest of the hub.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]
admin.site.site_header = "QontoHub"
admin.site.site_title = "QontoHub"
admin.site.index_title = "Back office"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("orgs/switch/", views.switch_org, name="switch-org"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("connectors.urls")),
    path("webhooks/", include("connectors.webhook_urls")),
]

if settings.SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/", include("connectors.sandbox.urls")))
