"""Admin screens of the connectors: connections and their buttons, sync runs and events,
webhook events (replay), outbox pushes (retry), links, mappings and the mirror.

The admin shows and triggers; it does not decide: every button calls one service or enqueues one
task. Support staff read everything here across organisations; credentials are never displayed
(they have no form field and are excluded from every listing).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from import_export.admin import ImportExportModelAdmin

from connectors.models import (
    Attachment,
    BankAccount,
    BankTransaction,
    Connection,
    Counterparty,
    Document,
    Push,
    RecordLink,
    SyncEvent,
    SyncRun,
    ValueMapping,
    WebhookEvent,
)
from connectors.registry import PROVIDERS, connector_class
from connectors.resources import ValueMappingResource
from qontohub.admin_base import ReadOnlyTenantAdmin, TenantAdmin
from qontohub.current import current_organization
from qontohub.models import FirmMembership, Organization
from qontohub.tenancy import MANAGE_ROLES, is_support, organization_ids_for


def can_manage_any(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_superuser or (not is_support(user) and organization_ids_for(user, MANAGE_ROLES)))


def status_badge(value: str, label: str) -> str:
    return format_html('<span class="qh-status-{}">{}</span>', value, label)


@admin.register(Connection)
class ConnectionAdmin(TenantAdmin):
    list_display = ["__str__", "organization", "firm", "provider", "status_display", "last_sync_at", "error_excerpt"]
    list_filter = ["provider", "status", "organization"]
    list_select_related = ["organization", "firm"]
    search_fields = ["display_name", "external_account_id"]
    fields = [
        "organization",
        "firm",
        "provider",
        "auth_method",
        "display_name",
        "external_account_id",
        "status",
        "scopes",
        "token_expires_at",
        "last_sync_at",
        "connected_at",
        "disconnected_at",
        "last_error",
        "last_error_at",
        "stream_cursors",
        "recent_runs",
    ]
    readonly_fields = [f for f in fields if f not in {"display_name"}]
    change_form_template = "admin/connectors/connection/change_form.html"
    change_list_template = "admin/connectors/connection/change_list.html"

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # Connections are created by the connect flows (OAuth or API key), not by a form.
        return False

    # --- firm-owned connections (the accounting software; organization null, firm set) ------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        qs = super().get_queryset(request)
        firm_rows = Connection.objects.visible_to(request.user).filter(organization__isnull=True)
        org = current_organization(request)
        if org is not None:
            firm_rows = firm_rows.filter(firm_id=org.firm_id)
        return qs | firm_rows

    def _firm_member(self, request: HttpRequest, obj: Connection) -> bool:
        user = request.user
        return bool(user.is_superuser or FirmMembership.objects.filter(user=user, firm_id=obj.firm_id).exists())

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.organization_id is None:
            user = request.user
            return bool(user.is_active and user.is_staff and (is_support(user) or self._firm_member(request, obj)))
        return super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.organization_id is None:
            user = request.user
            return bool(user.is_active and user.is_staff and not is_support(user) and self._firm_member(request, obj))
        return super().has_change_permission(request, obj)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Connection) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="last error")
    def error_excerpt(self, obj: Connection) -> str:
        return (obj.last_error[:90] + "…") if len(obj.last_error) > 90 else obj.last_error

    @admin.display(description="streams")
    def stream_cursors(self, obj: Connection) -> str:
        rows = [
            format_html(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.stream,
                c.value or "—",
                c.last_success_at or "never",
                "resuming" if c.position else "",
            )
            for c in obj.cursors.order_by("stream")
        ]
        if not rows:
            return "not synced yet"
        header = "<tr><th>stream</th><th>cursor</th><th>last successful sync</th><th></th></tr>"
        return format_html("<table>{}{}</table>", format_html(header), format_html("".join(rows)))

    @admin.display(description="recent runs")
    def recent_runs(self, obj: Connection) -> str:
        url = reverse("admin:connectors_syncrun_changelist") + "?" + urlencode({"connection__id__exact": obj.pk})
        return format_html('<a href="{}">sync runs of this connection</a>', url)

    # --- buttons ------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("connect/", wrap(self.connect_view), name="connectors_connection_connect"),
            path("<int:pk>/do/<str:action>/", wrap(self.button_view), name="connectors_connection_button"),
        ] + super().get_urls()

    def connect_view(self, request: HttpRequest) -> HttpResponse:
        """A page listing each provider and the organisations the user manages, with buttons."""
        from django.template.response import TemplateResponse

        if not self.has_change_permission(request):
            raise Http404("You cannot connect providers.")
        organizations = Organization.objects.with_role(request.user, MANAGE_ROLES)
        providers = [
            {"slug": slug, "name": connector_class(slug).name, "methods": connector_class(slug).auth_methods}
            for slug in PROVIDERS
            # Firm-owned providers (accounting software) are connected from the client files.
            if connector_class(slug).owner != "firm"
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Connect a provider",
            "organizations": organizations,
            "providers": providers,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/connectors/connection/connect.html", context)

    def button_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        if request.method != "POST":
            raise Http404("Buttons are POST forms.")
        connection = self.get_queryset(request).filter(pk=pk).first()
        if connection is None or not self.has_change_permission(request, connection):
            raise Http404("No such connection among yours.")
        from connectors import services, tasks

        change_url = reverse("admin:connectors_connection_change", args=[pk])
        try:
            if action == "sync":
                tasks.enqueue_sync(connection, trigger=SyncRun.Trigger.BUTTON)
                messages.success(request, "Sync queued; its progress shows under Sync runs.")
            elif action == "full-resync":
                tasks.enqueue_sync(connection, trigger=SyncRun.Trigger.BUTTON, full=True)
                messages.success(request, "Full resync queued: every stream is read again from the start.")
            elif action == "disconnect":
                services.disconnect(connection, request.user)
                messages.success(request, "Disconnected: access revoked with the provider; synced data is kept.")
            elif action == "reconnect":
                redirect_uri = services.callback_uri(connection.provider)
                url = services.reconnect(connection, request.user, redirect_uri)
                return HttpResponseRedirect(url)
            else:
                raise Http404("Unknown action.")
        except services.ConnectError as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(change_url)


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyTenantAdmin):
    list_display = [
        "started_at",
        "organization",
        "connection",
        "trigger",
        "outcome",
        "read",
        "created",
        "updated",
        "unchanged",
        "failed",
        "requests",
        "duration",
    ]
    list_filter = ["outcome", "trigger", "connection__provider", "organization", ("started_at", admin.DateFieldListFilter)]
    list_select_related = ["organization", "connection"]
    date_hierarchy = "started_at"
    readonly_fields = [*SyncRun.REPORT_FIELDS, "traceback", "events_link"]
    fields = readonly_fields
    change_form_template = "admin/connectors/syncrun/change_form.html"

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: SyncRun) -> str:
        return "running…" if obj.duration_ms is None else f"{obj.duration_ms / 1000:.1f} s"

    @admin.display(description="events")
    def events_link(self, obj: SyncRun) -> str:
        url = reverse("admin:connectors_syncevent_changelist") + "?" + urlencode({"run__id__exact": obj.pk})
        return format_html('<a href="{}">{} event(s)</a>', url, obj.events.count())


@admin.register(SyncEvent)
class SyncEventAdmin(ReadOnlyTenantAdmin):
    list_display = ["created_at", "organization", "connection", "stream", "external_id", "kind", "reason"]
    list_filter = ["kind", "stream", "connection__provider", "organization"]
    list_select_related = ["organization", "connection"]
    search_fields = ["external_id", "reason"]
    readonly_fields = ["created_at", "organization", "run", "connection", "stream", "external_id", "kind", "reason", "data"]
    fields = readonly_fields


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyTenantAdmin):
    list_display = ["received_at", "organization", "provider", "event_type", "event_id", "status", "reason"]
    list_filter = ["status", "provider", "organization"]
    list_select_related = ["organization"]
    search_fields = ["event_id", "event_type"]
    readonly_fields = [
        "received_at",
        "organization",
        "connection",
        "provider",
        "event_id",
        "event_type",
        "status",
        "reason",
        "headers",
        "body",
        "processed_at",
        "run",
    ]
    fields = readonly_fields
    actions = ["replay"]

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return can_manage_any(request)

    @admin.action(description="Replay selected events (re-read the streams they touch)", permissions=["manage"])
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        from connectors import webhooks

        allowed = organization_ids_for(request.user, MANAGE_ROLES)
        replayed = 0
        for event in queryset.filter(accepted=True):
            if request.user.is_superuser or event.organization_id in allowed:
                webhooks.replay_webhook(event.pk)
                replayed += 1
        skipped = queryset.count() - replayed
        messages.success(request, f"{replayed} event(s) replayed" + (f"; {skipped} skipped (rejected or not yours)." if skipped else "."))


@admin.register(Push)
class PushAdmin(ReadOnlyTenantAdmin):
    list_display = ["created_at", "organization", "connection", "action", "status", "attempts", "next_attempt_at", "remote_id", "last_error"]
    list_filter = ["status", "action", "connection__provider", "organization"]
    list_select_related = ["organization", "connection"]
    search_fields = ["idempotency_key", "source_id", "remote_id"]
    readonly_fields = [
        "created_at",
        "organization",
        "connection",
        "action",
        "idempotency_key",
        "source_type",
        "source_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "remote_id",
        "response",
        "done_at",
    ]
    fields = readonly_fields
    actions = ["retry"]

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return can_manage_any(request)

    @admin.action(description="Retry selected failed pushes now", permissions=["manage"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Push]) -> None:
        from connectors import outbox

        allowed = organization_ids_for(request.user, MANAGE_ROLES)
        count = 0
        for push in queryset.filter(status__in=[Push.Status.FAILED, Push.Status.DEAD]):
            if request.user.is_superuser or push.organization_id in allowed:
                outbox.retry_push(push.pk)
                count += 1
        messages.success(request, f"{count} push(es) queued again.")


@admin.register(RecordLink)
class RecordLinkAdmin(ReadOnlyTenantAdmin):
    list_display = ["organization", "source_provider", "source_type", "source_id", "target_provider", "target_type", "target_id", "updated_at"]
    list_filter = ["source_provider", "target_provider", "organization"]
    search_fields = ["source_id", "target_id"]


@admin.register(ValueMapping)
class ValueMappingAdmin(ImportExportModelAdmin, TenantAdmin):
    resource_classes = [ValueMappingResource]
    list_display = ["organization", "connection", "kind", "source_value", "target_value", "version", "updated_at"]
    list_filter = ["kind", "organization"]
    search_fields = ["source_value", "target_value"]

    def get_import_resource_kwargs(self, request: HttpRequest, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_import_resource_kwargs(request, **kwargs), "user": request.user}


class MirrorAdmin(ReadOnlyTenantAdmin):
    list_select_related = ["organization", "connection"]
    search_fields = ["external_id"]
    exclude = ["raw"]
    readonly_fields = ["raw_payload"]

    @admin.display(description="raw payload")
    def raw_payload(self, obj: Any) -> str:
        import json

        return format_html("<pre>{}</pre>", json.dumps(obj.raw, indent=2, ensure_ascii=False))


@admin.register(BankAccount)
class BankAccountAdmin(MirrorAdmin):
    list_display = ["name", "organization", "iban", "currency", "balance", "synced_at"]
    list_filter = ["organization", "currency"]


@admin.register(BankTransaction)
class BankTransactionAdmin(MirrorAdmin):
    list_display = ["settled_at", "organization", "amount", "currency", "side", "status", "counterparty_name", "label"]
    list_filter = ["status", "side", "organization"]
    search_fields = ["external_id", "counterparty_name", "label", "reference"]
    date_hierarchy = "settled_at"


@admin.register(Document)
class DocumentAdmin(MirrorAdmin):
    list_display = ["kind", "number", "organization", "counterparty_name", "total_amount", "currency", "issue_date", "status"]
    list_filter = ["kind", "status", "connection__provider", "organization"]
    search_fields = ["external_id", "number", "counterparty_name"]


@admin.register(Counterparty)
class CounterpartyAdmin(MirrorAdmin):
    list_display = ["name", "role", "organization", "tax_id", "vat_number", "email"]
    list_filter = ["role", "organization"]
    search_fields = ["name", "tax_id", "vat_number", "external_id"]


@admin.register(Attachment)
class AttachmentAdmin(MirrorAdmin):
    list_display = ["file_name", "organization", "content_type", "size", "parent_external_id"]
    list_filter = ["organization"]
