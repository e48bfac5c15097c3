"""Admin: every QuickBooks bill with what the hub did with it and why (issue 5).

``QuickBooksBill`` is a proxy of the mirrored ``Document`` restricted to QuickBooks bills. Its
list shows, per bill: the outcome (posted as a new Qonto supplier invoice, linked to an existing
one, upload waiting or failed, in review, refused, rejected), the confidence, the reason (the
best candidate's explanations), the Qonto entry it became and whether the bill was edited in
QuickBooks after posting. The detail page lists every candidate with its explanations, the record
link's history and the upload.

``QuickBooksSettings`` (a proxy of ``Connection`` restricted to QuickBooks) is where an owner or
accountant sets the first import's history start (``options["history_start"]``) and the field
mapping overrides, which are saved through ``connectors.quickbooks.mapping.set_override`` so each
one gets the next mapping version.

The admin shows; it does not decide (house rule 10): decisions are made in the review queue
(``reconciliation/admin.py``), which this page links to. Rows are read through the tenant rules
of ``TenantAdmin`` (an outsider's request for a bill answers 404). The list costs a fixed number of
queries: one subquery column for the match's status (to filter on it), then one query each for
the page's matches, record links, uploads and Qonto invoices (``QuickBooksBillChangeList``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from connectors.models import Connection, Document, Push, RecordLink, ValueMapping
from connectors.quickbooks.mapping import DEFAULTS, MappingError, set_override
from qontohub.admin_base import TenantAdmin
from reconciliation.models import Match
from reconciliation.quickbooks_flow import NEW_LABEL, ROUTE, bill_links, source_id_of


class QuickBooksBillManager(Document._default_manager.__class__):  # type: ignore[misc]
    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().filter(connection__provider="quickbooks", kind=Document.Kind.BILL)


class QuickBooksBill(Document):
    """A QuickBooks bill as the QuickBooks → Qonto flow sees it."""

    objects = QuickBooksBillManager()

    class Meta:
        proxy = True
        app_label = "reconciliation"
        verbose_name = "QuickBooks bill"
        verbose_name_plural = "QuickBooks bills"


OUTCOMES = {
    Match.Status.AUTO_POSTED: "posted",
    Match.Status.APPROVED: "posted (approved)",
    Match.Status.PINNED: "linked by hand",
    Match.Status.PROPOSED: "in review",
    Match.Status.REFUSED: "refused",
    Match.Status.REJECTED: "rejected",
    Match.Status.UNMATCHED: "unmatched",
}


class OutcomeFilter(admin.SimpleListFilter):
    title = "what the hub did"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*((status, label) for status, label in OUTCOMES.items()), ("none", "not scored yet")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if value == "none":
            return queryset.filter(match_status__isnull=True)
        return queryset.filter(match_status=value)


class QuickBooksBillChangeList(ChangeList):
    """Loads the page's matches, record links, uploads and Qonto invoices in four queries."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        attach(list(self.result_list))


def attach(bills: list[Any]) -> None:
    """Set ``_match``, ``_link``, ``_push`` on each bill (four queries for any number of bills)."""
    pks = [b.pk for b in bills]
    matches = {m.document_id: m for m in Match.objects.filter(route=ROUTE, document_id__in=pks)}
    # Record links by their natural key "<realmId>:<bill Id>" (indexed), not by a JSON field.
    source_ids = {source_id_of(b.connection, b): b.pk for b in bills}
    links: dict[int, RecordLink] = {}
    for link in bill_links({b.organization_id for b in bills}).filter(source_id__in=list(source_ids)):
        links[source_ids[link.source_id]] = link
    push_ids = [link.data.get("push") for link in links.values() if link.data.get("push")]
    pushes = {
        p.pk: p for p in Push.objects.filter(pk__in=push_ids).only("pk", "status", "last_error", "remote_id")
    }
    targets = {link.target_id for link in links.values() if link.target_id}
    documents = (
        dict(
            Document.objects.filter(
                organization_id__in={b.organization_id for b in bills},
                connection__provider="qonto",
                kind=Document.Kind.SUPPLIER_INVOICE,
                external_id__in=targets,
            ).values_list("external_id", "pk")
        )
        if targets
        else {}
    )
    for bill in bills:
        bill._qonto_documents = documents
        bill._match = matches.get(bill.pk)
        bill._link = links.get(bill.pk)
        bill._push = pushes.get((bill._link.data or {}).get("push")) if bill._link else None


@admin.register(QuickBooksBill)
class QuickBooksBillAdmin(TenantAdmin):
    list_display = [
        "number_display",
        "counterparty_name",
        "amount_display",
        "issue_date",
        "outcome",
        "confidence",
        "reason",
        "qonto_entry",
    ]
    list_filter = [OutcomeFilter, "currency"]
    list_select_related = ["connection"]
    search_fields = ["number", "counterparty_name", "external_id"]
    ordering = ["-issue_date", "-pk"]
    show_full_result_count = False
    fields = [
        "connection",
        "external_id",
        "number",
        "counterparty_name",
        "counterparty_tax_id",
        "amount_display",
        "issue_date",
        "due_date",
        "status",
        "mapping_version",
        "outcome",
        "confidence",
        "candidates_display",
        "qonto_entry",
        "history_display",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        match = Match.objects.filter(route=ROUTE, document=OuterRef("pk"))
        return super().get_queryset(request).annotate(match_status=Subquery(match.values("status")[:1]))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QuickBooksBillChangeList

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            attach([obj])
        return obj

    # The hub writes these rows; people decide in the review queue.
    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    # --- columns ----------------------------------------------------------------------------
    @admin.display(description="bill", ordering="number")
    def number_display(self, obj: Any) -> str:
        return obj.number or f"QuickBooks bill {obj.external_id}"

    @admin.display(description="amount", ordering="total_amount")
    def amount_display(self, obj: Any) -> str:
        return f"{obj.total_amount:,.2f} {obj.currency}"

    @admin.display(description="what the hub did", ordering="match_status")
    def outcome(self, obj: Any) -> str:
        match: Match | None = getattr(obj, "_match", None)
        if match is None:
            return "deleted in QuickBooks" if obj.status == "deleted" else "not scored yet"
        label = OUTCOMES.get(match.status, match.status)
        push: Push | None = getattr(obj, "_push", None)
        link: RecordLink | None = getattr(obj, "_link", None)
        if match.status in Match.POSTED:
            if link is not None and (link.data or {}).get("mode") == "linked":
                label = "linked to an existing Qonto invoice" + (
                    " (by hand)" if match.status == Match.Status.PINNED else ""
                )
            elif push is not None and push.status != Push.Status.DONE:
                label = f"{label}: upload {push.get_status_display().lower()}"
            if link is not None and (link.data or {}).get("updated_in_quickbooks"):
                label += "; edited in QuickBooks since (recorded)"
        url = reverse("admin:reconciliation_match_change", args=[match.pk])
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="confidence")
    def confidence(self, obj: Any) -> str:
        match = getattr(obj, "_match", None)
        return "—" if match is None else str(match.confidence)

    @admin.display(description="why")
    def reason(self, obj: Any) -> str:
        match: Match | None = getattr(obj, "_match", None)
        best = match.best_candidate() if match else None
        if not best:
            return "—"
        target = ", ".join(best.get("labels") or []) or NEW_LABEL
        said = "; ".join(f["explanation"] for f in best.get("features") or [] if f.get("explanation"))
        return f"{target}: {said}"[:400]

    @admin.display(description="Qonto entry")
    def qonto_entry(self, obj: Any) -> str:
        link: RecordLink | None = getattr(obj, "_link", None)
        push: Push | None = getattr(obj, "_push", None)
        if link is None or not link.target_id:
            if push is not None:
                url = reverse("admin:connectors_push_change", args=[push.pk])
                return format_html('<a href="{}">upload {}</a>', url, push.get_status_display().lower())
            return "—"
        document = getattr(obj, "_qonto_documents", {}).get(link.target_id)
        if document is not None:
            url = reverse("admin:connectors_document_change", args=[document])
            return format_html('<a href="{}">supplier invoice {}</a>', url, link.target_id)
        return format_html("supplier invoice <code>{}</code>", link.target_id)

    @admin.display(description="candidates")
    def candidates_display(self, obj: Any) -> str:
        match: Match | None = getattr(obj, "_match", None)
        if match is None or not match.candidates:
            return "—"
        rows = [
            (
                ", ".join(c.get("labels") or []) or NEW_LABEL,
                c.get("confidence"),
                "; ".join(f"{f['name']}: {f['explanation']}" for f in c.get("features") or []),
            )
            for c in match.candidates
        ]
        return format_html(
            "<table><tr><th>candidate</th><th>confidence</th><th>why</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="history")
    def history_display(self, obj: Any) -> str:
        link: RecordLink | None = getattr(obj, "_link", None)
        if link is None:
            return "—"
        updates = (link.data or {}).get("updates") or []
        rows = [
            (u.get("at", ""), ", ".join(f"{k}: {v[0]} → {v[1]}" for k, v in (u.get("changes") or {}).items()))
            for u in updates
        ]
        head = format_html(
            "{} ({})", (link.data or {}).get("mode", ""), (link.data or {}).get("file", "") or "—"
        )
        if not rows:
            return head
        return format_html("{}<ul>{}</ul>", head, format_html_join("", "<li>{}: {}</li>", rows))


# --- connection settings: history start and field mapping overrides -----------------------------
class QuickBooksConnectionManager(Connection._default_manager.__class__):  # type: ignore[misc]
    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().filter(provider="quickbooks")


class QuickBooksSettings(Connection):
    """A QuickBooks connection's own settings."""

    objects = QuickBooksConnectionManager()

    class Meta:
        proxy = True
        app_label = "reconciliation"
        verbose_name = "QuickBooks connection settings"
        verbose_name_plural = "QuickBooks connection settings"


class QuickBooksSettingsForm(forms.ModelForm):
    history_start = forms.DateField(
        required=False,
        help_text="The first sync imports bills, invoices and payments dated from this day (empty: the "
        "whole history). Bills dated before it are never posted to Qonto. Moving it earlier after "
        "the first sync takes a full resync of the connection.",
    )

    class Meta:
        model = QuickBooksSettings
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["history_start"].initial = (self.instance.options or {}).get("history_start")

    def save(self, commit: bool = True) -> Any:
        options = dict(self.instance.options or {})
        day = self.cleaned_data.get("history_start")
        if day:
            options["history_start"] = day.isoformat()
        else:
            options.pop("history_start", None)
        self.instance.options = options
        return super().save(commit)


class FieldOverrideForm(forms.ModelForm):
    target_value = forms.ChoiceField(
        label="hub field", choices=sorted({(t, t) for fields in DEFAULTS.values() for t in fields})
    )

    class Meta:
        model = ValueMapping
        fields = ["source_value", "target_value", "note"]
        labels = {"source_value": "QuickBooks field (Entity.Path)"}
        help_texts = {"source_value": "e.g. Bill.PrivateNote, Vendor.CompanyName, Purchase.DocNumber"}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        entity, _, path = str(data.get("source_value") or "").partition(".")
        if entity not in DEFAULTS or not path:
            raise forms.ValidationError(
                f"Write the QuickBooks field as Entity.Path, Entity one of {', '.join(DEFAULTS)}."
            )
        if data.get("target_value") not in DEFAULTS[entity]:
            raise forms.ValidationError(f"{entity} maps only {', '.join(DEFAULTS[entity])}.")
        return data


class FieldOverrideInline(admin.TabularInline):
    model = ValueMapping
    form = FieldOverrideForm
    fk_name = "connection"
    extra = 1
    can_delete = False  # going back to the default is a new override (a new version), not a deletion
    fields = ["source_value", "target_value", "note", "version", "updated_at"]
    readonly_fields = ["version", "updated_at"]
    verbose_name = "field mapping override"
    verbose_name_plural = "field mapping overrides (applied to records read after they are saved)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).filter(kind=ValueMapping.Kind.FIELD)

    # Roles decide, as on the connection itself (qontohub/admin_base.py), not Django permissions.
    def _parent(self) -> TenantAdmin:
        return self.admin_site._registry[QuickBooksSettings]

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_change_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(QuickBooksSettings)
class QuickBooksSettingsAdmin(TenantAdmin):
    form = QuickBooksSettingsForm
    inlines = [FieldOverrideInline]
    list_display = ["__str__", "organization", "status", "history", "mapping_version"]
    fields = ["display_name", "status", "history_start", "mapping_version"]
    readonly_fields = ["display_name", "status", "mapping_version"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # connections are made by the connect flow

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    @admin.display(description="history from")
    def history(self, obj: Connection) -> str:
        return (obj.options or {}).get("history_start") or "everything"

    @admin.display(description="mapping version")
    def mapping_version(self, obj: Connection) -> int:
        from connectors.quickbooks.mapping import mapping_for

        return mapping_for(obj).version

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not ValueMapping:
            super().save_formset(request, form, formset, change)
            return
        # The admin's change message reads what a formset saved; the overrides are saved below.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for row in formset.forms:
            if not row.has_changed() or not row.cleaned_data:
                continue
            entity, _, path = row.cleaned_data["source_value"].partition(".")
            try:
                set_override(
                    form.instance,
                    entity,
                    path,
                    row.cleaned_data["target_value"],
                    row.cleaned_data.get("note", ""),
                )
            except MappingError as exc:
                messages.error(request, str(exc))
