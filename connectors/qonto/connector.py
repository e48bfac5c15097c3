"""The Qonto connector: how the hub authenticates to Qonto and what it reads and writes.

Facts from ``shared/reference/qonto-api.md``: API under ``/v2`` on the API host; OAuth 2.0 on
the OAuth host (``/oauth2/auth``, ``/oauth2/token``, ``/oauth2/revoke``) with 1 h access tokens
and rotating 90-day refresh tokens (``offline_access``), the old refresh token staying valid for
60 s after its first use; or an API key sent as ``Authorization: {login}:{secret}`` (not Basic).
Calls to Qonto's sandbox environment also carry ``X-Qonto-Staging-Token``.

What it reads is declared in ``streams.py``, how it writes in ``writes.py`` (called by the
outbox), and webhook verification and subscription live in ``webhooks.py``; this class only
points at them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.base import Connector, FileDownload, OAuthSpec, Stream, WebhookCheck
from connectors.qonto import webhooks, writes
from connectors.qonto.streams import STREAMS

if TYPE_CHECKING:
    from connectors.models import Push


class QontoConnector(Connector):
    slug = "qonto"
    name = "Qonto"
    auth_methods = ("oauth2", "api_key")
    oauth = OAuthSpec(
        authorize_url="{oauth_base_url}/oauth2/auth",
        token_url="{oauth_base_url}/oauth2/token",
        revoke_url="{oauth_base_url}/oauth2/revoke",
        scopes=(
            "offline_access",
            "organization.read",
            "attachment.read",
            "client.read",
            "client.write",
            "client_invoices.read",
            "supplier_invoice.read",
            "supplier_invoice.write",
            "webhook",
        ),
        refresh_grace_seconds=60,
    )
    streams: ClassVar[tuple[type[Stream], ...]] = STREAMS

    def auth_headers(self) -> dict[str, str]:
        credentials: dict[str, Any] = self.connection.credentials or {}
        if self.connection.auth_method == "api_key":
            # Qonto's API key header is "{login}:{secret}" verbatim: no "Basic", no base64.
            return {"Authorization": f"{credentials.get('login', '')}:{credentials.get('secret_key', '')}"}
        return {"Authorization": f"Bearer {credentials.get('access_token', '')}"}

    def extra_headers(self) -> dict[str, str]:
        staging_token = self.settings().get("staging_token") or self.connection.options.get("staging_token")
        return {"X-Qonto-Staging-Token": staging_token} if staging_token else {}

    def identify(self) -> tuple[str, str]:
        organization = self.http.get_json("/v2/organization")["organization"]
        return str(organization.get("slug") or organization.get("id")), str(
            organization.get("legal_name") or organization.get("name") or organization.get("slug")
        )

    # --- webhooks ---------------------------------------------------------------------------
    def download_attachment(self, external_id: str) -> FileDownload:
        """An attachment's file through its fresh 30-minute URL (§3.3); metadata mirrored on the way."""
        from connectors.models import Attachment
        from connectors.qonto.streams import fetch_attachment_bytes

        content = fetch_attachment_bytes(self.connection, external_id)
        meta = (
            Attachment.objects.filter(connection=self.connection, stream="attachments", external_id=external_id)
            .values("file_name", "content_type")
            .first()
            or {}
        )
        return FileDownload(
            meta.get("file_name") or f"attachment-{external_id}.pdf",
            content,
            meta.get("content_type") or "application/pdf",
        )

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookCheck:
        return webhooks.verify(self, headers, body)

    def on_connect(self) -> None:
        webhooks.subscribe(self)

    def on_disconnect(self) -> None:
        webhooks.unsubscribe(self)

    # --- writes (outbox actions: "client.create" calls push_client_create) ---------------------
    def push_client_create(self, push: Push) -> tuple[str, dict[str, Any]]:
        return writes.push_client_create(self, push)

    def push_client_update(self, push: Push) -> tuple[str, dict[str, Any]]:
        return writes.push_client_update(self, push)

    def push_supplier_invoice_upload(self, push: Push) -> tuple[str, dict[str, Any]]:
        return writes.push_supplier_invoice_upload(self, push)
