"""Admin screens of the accountant hub: client files and the association wizard, entries with
their rule violations, the chart (import/export), journals, fiscal years and exports.

The admin shows and triggers; the rules are in ``accountant.services`` (house rule 10). Every
screen lists rows through ``TenantAdmin`` (the file's organisation's members and its firm's
members); changing a client file, pushing and associating are for members of the file's firm.
Exports are downloaded through a view that checks the row, never through a public media URL.
"""

from __future__ import annotations

import tempfile
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export.admin import ImportExportModelAdmin

from accountant import exports, services
from accountant.models import Account, ClientFile, EntryLine, Export, FiscalYear, Journal, JournalEntry
from accountant.resources import AccountResource
from qontohub.admin_base import ReadOnlyTenantAdmin, TenantAdmin
from qontohub.models import Firm, FirmMembership
from qontohub.tenancy import Role, is_support


def badge(value: str, label: str) -> str:
    return format_html('<span class="qh-status-{}">{}</span>', value, label)


def firm_member(request: HttpRequest, firm_id: int | None) -> bool:
    user = request.user
    if user.is_superuser:
        return True
    if is_support(user) or firm_id is None:
        return False
    return FirmMembership.objects.filter(user=user, firm_id=firm_id).exists()


class FirmManagedAdmin(TenantAdmin):
    """Rows of client files: everyone concerned reads them, the file's firm changes them."""

    organization_field = "organization"
    change_roles = frozenset({Role.ACCOUNTANT})
    firm_path = "client_file__firm_id"

    def firm_id_of(self, obj: Any) -> int | None:
        value: Any = obj
        for part in self.firm_path.split("__"):
            value = getattr(value, part)
        return value

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        if obj is None:
            return request.user.is_superuser or services.firms_of(request.user).exists()
        return firm_member(request, self.firm_id_of(obj))

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_firm_permission(self, request: HttpRequest) -> bool:
        return self.has_change_permission(request)


# --- client files and the wizard ----------------------------------------------------------------
@admin.register(ClientFile)
class ClientFileAdmin(FirmManagedAdmin):
    firm_path = "firm_id"
    list_display = [
        "organization",
        "remote_company_name",
        "status_display",
        "sync_frequency",
        "weekly_account_sync",
        "last_push_at",
        "error_excerpt",
    ]
    list_filter = ["status", "sync_frequency", "firm"]
    list_select_related = ["organization", "firm"]
    search_fields = ["organization__name", "remote_company_name", "remote_siren"]
    fields = [
        "organization",
        "firm",
        "connection",
        "software",
        "remote_company_id",
        "remote_company_name",
        "remote_siren",
        "remote_client_code",
        "status",
        "sync_frequency",
        "weekly_account_sync",
        "associated_at",
        "activated_at",
        "disabled_at",
        "reference_synced_at",
        "last_push_at",
        "last_error",
        "last_error_at",
    ]
    readonly_fields = [f for f in fields if f not in {"sync_frequency", "weekly_account_sync"}]
    change_list_template = "admin/accountant/clientfile/change_list.html"
    actions = ["push_now", "refresh_now", "export_csv", "export_xlsx", "export_fec_last_year"]

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ClientFile) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="last error")
    def error_excerpt(self, obj: ClientFile) -> str:
        return (obj.last_error[:90] + "…") if len(obj.last_error) > 90 else obj.last_error

    def save_model(self, request: HttpRequest, obj: ClientFile, form: Any, change: bool) -> None:
        # Only the frequency and the weekly switch are editable; both go through the service.
        services.set_frequency(obj, obj.sync_frequency, request.user)
        ClientFile.objects.filter(pk=obj.pk).update(weekly_account_sync=obj.weekly_account_sync)

    # --- actions ------------------------------------------------------------------------------
    def _each(self, request: HttpRequest, queryset: QuerySet[ClientFile], work: Any, done: str) -> None:
        count = 0
        for client_file in queryset:
            if not firm_member(request, client_file.firm_id):
                continue
            try:
                work(client_file)
                count += 1
            except services.AccountantError as exc:
                messages.error(request, f"{client_file.organization}: {exc}")
        if count:
            messages.success(request, done.format(count=count))

    @admin.action(description="Push validated entries now", permissions=["firm"])
    def push_now(self, request: HttpRequest, queryset: QuerySet[ClientFile]) -> None:
        self._each(request, queryset, services.push_pending, "{count} file(s) pushed; see each file's entries.")

    @admin.action(description="Refresh accounting data now", permissions=["firm"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[ClientFile]) -> None:
        self._each(request, queryset, services.refresh_reference_data, "Accounting data of {count} file(s) refreshed.")

    @admin.action(description="Export entries (CSV)", permissions=["firm"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[ClientFile]) -> None:
        self._each(request, queryset, lambda cf: exports.export_table(cf, "csv", user=request.user),
                   "{count} CSV export(s) ready under Exports.")

    @admin.action(description="Export entries (XLSX)", permissions=["firm"])
    def export_xlsx(self, request: HttpRequest, queryset: QuerySet[ClientFile]) -> None:
        self._each(request, queryset, lambda cf: exports.export_table(cf, "xlsx", user=request.user),
                   "{count} XLSX export(s) ready under Exports.")

    @admin.action(description="Export FEC of last year", permissions=["firm"])
    def export_fec_last_year(self, request: HttpRequest, queryset: QuerySet[ClientFile]) -> None:
        year = timezone.localdate().year - 1

        def work(cf: ClientFile) -> None:
            with tempfile.TemporaryDirectory() as directory:
                try:
                    result = exports.export_fec(cf, year, directory, user=request.user)
                except exports.ExportError as exc:
                    raise services.AccountantError(str(exc)) from exc
            if result.violations:
                messages.warning(request, f"{cf.organization}: the FEC has {len(result.violations)} violation(s).")

        self._each(request, queryset, work, "{count} FEC export(s) ready under Exports.")

    # --- wizard -------------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("wizard/", wrap(self.wizard_view), name="accountant_clientfile_wizard"),
            path("wizard/connection/", wrap(self.connection_view), name="accountant_clientfile_connection"),
            path("<int:pk>/do/<str:action>/", wrap(self.button_view), name="accountant_clientfile_button"),
        ] + super().get_urls()

    def _firm(self, request: HttpRequest) -> Firm:
        firms = services.firms_of(request.user).order_by("name")
        raw = request.POST.get("firm") or request.GET.get("firm")
        firm = firms.filter(pk=raw).first() if raw and raw.isdigit() else firms.first()
        if firm is None:
            raise Http404("The association wizard is for members of an accounting firm.")
        return firm

    def _wizard_url(self, firm: Firm, anchor: str = "") -> str:
        return f"{reverse('admin:accountant_clientfile_wizard')}?firm={firm.pk}{anchor}"

    def wizard_view(self, request: HttpRequest) -> HttpResponse:
        """Step 1: pair client files (left) with the software's companies (right); step 2: activate."""
        firm = self._firm(request)
        connection = services.firm_connection(firm)
        companies: list[Any] = []
        if connection is not None and connection.status == connection.Status.ACTIVE:
            try:
                companies = services.remote_companies(firm)
            except services.AccountantError as exc:
                messages.error(request, str(exc))
        if request.method == "POST" and request.POST.get("step") == "associate":
            return self._associate(request, firm, companies)
        files = services.ensure_client_files(firm)
        pairs = {p.client_file.pk: p for p in services.suggest_pairs(firm, companies)} if companies else {}
        rows = [
            {
                "file": cf,
                "pair": pairs.get(cf.pk),
                "selected": pairs[cf.pk].company.id if cf.pk in pairs else "",
            }
            for cf in files
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Associate client files",
            "opts": self.model._meta,
            "firm": firm,
            "firms": services.firms_of(request.user).order_by("name"),
            "connection": connection,
            "companies": companies,
            "rows": rows,
            "files": files,
            "frequencies": ClientFile.Frequency.choices,
        }
        return TemplateResponse(request, "admin/accountant/clientfile/wizard.html", context)

    def _associate(self, request: HttpRequest, firm: Firm, companies: list[Any]) -> HttpResponse:
        by_id = {str(c.id): c for c in companies}
        files = {cf.pk: cf for cf in services.ensure_client_files(firm)}
        associated = 0
        for key, value in request.POST.items():
            if not key.startswith("company_") or not value:
                continue  # an empty choice is "skip this file for now"
            file_pk = key.removeprefix("company_")
            client_file = files.get(int(file_pk)) if file_pk.isdigit() else None
            company = by_id.get(value)
            if client_file is None or company is None:
                messages.error(request, "A choice no longer matches a client file or a company; try again.")
                continue
            if client_file.remote_company_id == company.id:
                continue
            try:
                services.associate(client_file, company, request.user)
                associated += 1
            except (services.AccountantError, PermissionDenied) as exc:
                messages.error(request, f"{client_file.organization}: {exc}")
        if associated:
            messages.success(request, f"{associated} client file(s) associated. Activate them below.")
        return HttpResponseRedirect(self._wizard_url(firm, "#files"))

    def connection_view(self, request: HttpRequest) -> HttpResponse:
        """Edit API connection: enter (or replace) the firm's API token for its software."""
        firm = self._firm(request)
        if not firm_member(request, firm.pk):
            raise Http404("Only the firm's members may change its connection.")
        connection = services.firm_connection(firm)
        if request.method == "POST":
            try:
                services.connect_software(firm, request.user, request.POST.get("api_token", ""))
            except services.AccountantError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, "Connected: the software's companies are listed on the right.")
                return HttpResponseRedirect(self._wizard_url(firm))
        context = {
            **self.admin_site.each_context(request),
            "title": "Accounting software connection",
            "opts": self.model._meta,
            "firm": firm,
            "connection": connection,
        }
        return TemplateResponse(request, "admin/accountant/clientfile/connection.html", context)

    def button_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        if request.method != "POST":
            raise Http404("Buttons are POST forms.")
        client_file = self.get_queryset(request).filter(pk=pk).select_related("organization", "firm").first()
        if client_file is None or not firm_member(request, client_file.firm_id):
            raise Http404("No such client file among your firm's.")
        name = client_file.organization.name
        try:
            if action == "activate":
                services.activate(client_file, request.user)
                messages.success(request, f"{name}: active; accounting data pulled.")
            elif action == "disable":
                services.disable(client_file, request.user)
                messages.success(request, f"{name}: integration disabled; nothing more is pushed, history is kept.")
            elif action == "refresh":
                report = services.refresh_reference_data(client_file)
                messages.success(
                    request,
                    f"{name}: accounting data refreshed ({report.accounts_created} new account(s), "
                    f"{report.journals} journal(s), {report.fiscal_years} fiscal year(s)).",
                )
            elif action == "push":
                report = services.push_pending(client_file)
                messages.success(
                    request, f"{name}: {report.pushed} pushed, {report.blocked} blocked, {report.failed} failing."
                )
            elif action == "frequency":
                services.set_frequency(client_file, request.POST.get("frequency", ""), request.user)
                messages.success(request, f"{name}: frequency saved.")
            else:
                raise Http404("Unknown action.")
        except services.AccountantError as exc:
            messages.error(request, f"{name}: {exc}")
        return HttpResponseRedirect(self._wizard_url(client_file.firm, "#files"))


# --- entries -------------------------------------------------------------------------------------
class EntryLineInline(admin.TabularInline):
    model = EntryLine
    fields = ["account", "aux_account", "label", "debit", "credit"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(JournalEntry)
class JournalEntryAdmin(FirmManagedAdmin):
    list_display = ["piece_number", "date", "organization", "journal", "label", "total_debit", "status_display",
                    "violation_summary", "push_state"]
    list_filter = ["status", "kind", "client_file", ("date", admin.DateFieldListFilter)]
    list_select_related = ["organization", "journal", "push"]
    search_fields = ["piece_number", "label", "reference"]
    date_hierarchy = "date"
    inlines = [EntryLineInline]
    fields = ["client_file", "journal", "kind", "date", "label", "piece_number", "reference", "due_date", "currency",
              "status", "violation_list", "total_debit", "total_credit", "source_document", "source_transaction",
              "supporting_document_ref", "supporting_file", "validated_at", "push", "pushed_at", "push_error",
              "remote_id"]
    readonly_fields = fields
    actions = ["validate", "push_now"]

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: JournalEntry) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="rule violations")
    def violation_summary(self, obj: JournalEntry) -> str:
        if not obj.violations:
            return ""
        first = obj.violations[0].get("message", "")
        more = f" (+{len(obj.violations) - 1})" if len(obj.violations) > 1 else ""
        return f"{first}{more}"

    @admin.display(description="rule violations")
    def violation_list(self, obj: JournalEntry) -> str:
        if not obj.violations:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((v.get("message", ""),) for v in obj.violations)))

    @admin.display(description="push")
    def push_state(self, obj: JournalEntry) -> str:
        if obj.push is None:
            return ""
        text = obj.push.get_status_display()
        if obj.push.last_error and obj.push.status != obj.push.Status.DONE:
            text += f": {obj.push.last_error[:80]}"
        return text

    @admin.action(description="Validate (check the software's rules)", permissions=["firm"])
    def validate(self, request: HttpRequest, queryset: QuerySet[JournalEntry]) -> None:
        ok = blocked = 0
        for entry in queryset.select_related("client_file"):
            if not firm_member(request, entry.client_file.firm_id):
                continue
            services.validate_entry(entry, request.user)
            ok += entry.status != JournalEntry.Status.BLOCKED
            blocked += entry.status == JournalEntry.Status.BLOCKED
        messages.info(request, f"{ok} entr(ies) validated, {blocked} blocked by a rule (reasons on each entry).")

    @admin.action(description="Push now", permissions=["firm"])
    def push_now(self, request: HttpRequest, queryset: QuerySet[JournalEntry]) -> None:
        pushed = 0
        for entry in queryset.select_related("client_file"):
            if not firm_member(request, entry.client_file.firm_id):
                continue
            try:
                services.push_entry(entry)
            except services.AccountantError as exc:
                messages.error(request, f"{entry.piece_number}: {exc}")
                continue
            entry.refresh_from_db()
            pushed += entry.status == JournalEntry.Status.PUSHED
        messages.info(request, f"{pushed} entr(ies) pushed; see the status and violations of the others.")


# --- reference data -------------------------------------------------------------------------------
@admin.register(Account)
class AccountAdmin(ImportExportModelAdmin, FirmManagedAdmin):
    resource_classes = [AccountResource]
    list_display = ["number", "label", "kind", "enabled", "remote_id", "client_file"]
    list_filter = ["kind", "enabled", "client_file"]
    search_fields = ["number", "label"]
    list_select_related = ["client_file", "client_file__organization"]
    fields = ["client_file", "number", "label", "kind", "enabled", "remote_id"]
    readonly_fields = fields

    def has_import_permission(self, request: HttpRequest) -> bool:
        # Imports are tenant-checked row by row in AccountResource.
        return self.has_change_permission(request)

    def get_import_resource_kwargs(self, request: HttpRequest, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_import_resource_kwargs(request, **kwargs), "user": request.user}


@admin.register(Journal)
class JournalAdmin(ReadOnlyTenantAdmin):
    list_display = ["code", "label", "kind", "remote_id", "client_file"]
    list_filter = ["kind", "client_file"]


@admin.register(FiscalYear)
class FiscalYearAdmin(ReadOnlyTenantAdmin):
    list_display = ["start", "end", "status", "remote_status", "client_file"]
    list_filter = ["status", "client_file"]


@admin.register(Export)
class ExportAdmin(ReadOnlyTenantAdmin):
    list_display = ["created_at", "client_file", "kind", "what", "lines", "violation_count", "created_by", "download"]
    list_filter = ["kind", "what", "client_file"]
    list_select_related = ["client_file", "client_file__organization", "created_by"]
    fields = ["client_file", "kind", "what", "fiscal_year", "lines", "violations", "created_by", "created_at", "download"]
    readonly_fields = fields

    @admin.display(description="violations")
    def violation_count(self, obj: Export) -> int:
        return len(obj.violations or [])

    @admin.display(description="file")
    def download(self, obj: Export) -> str:
        url = reverse("admin:accountant_export_download", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.file.name.rsplit("/", 1)[-1])

    def get_urls(self) -> list[Any]:
        return [
            path("<int:pk>/download/", self.admin_site.admin_view(self.download_view), name="accountant_export_download"),
        ] + super().get_urls()

    def download_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        export = get_object_or_404(self.get_queryset(request), pk=pk)
        return FileResponse(export.file.open("rb"), as_attachment=True, filename=export.file.name.rsplit("/", 1)[-1])
