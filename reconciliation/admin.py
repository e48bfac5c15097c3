"""Admin screens of reconciliation: the review queue, every match, the audit trail, the policy.

The admin shows and triggers; it does not decide. Each button posts to a small admin view that
parses the form, checks the person may act, and calls ``services.decide`` (or enqueues the
"Reconcile now" task); the rules, locking and audit rows live in the services.

The queue's changelist is built to stay at a fixed, small number of SQL queries with 100,000
items: the columns it lists, filters and sorts on are copied onto ``Match`` (no joins), the
full count is not computed (``show_full_result_count = False``), and every filter's choices are
static (no "distinct values" query).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from connectors.models import BankTransaction, Document
from qontohub.admin_base import ReadOnlyTenantAdmin, TenantAdmin
from qontohub.tenancy import REVIEW_ROLES, Role, is_support, organization_ids_for
from reconciliation import services, tasks
from reconciliation.models import Decision, Match, MatchPolicy, ReviewItem
from reconciliation.routes import DOCUMENT, ROUTE_CHOICES, ROUTES, TRANSACTION, RouteNotWired, get_route

OWNER_ONLY = frozenset({Role.OWNER})


# --- filters (static choices: no query to build them) ---------------------------------------
class RouteFilter(admin.SimpleListFilter):
    title = "route"
    parameter_name = "route"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return ROUTE_CHOICES

    def queryset(self, request: HttpRequest, queryset: QuerySet[Match]) -> QuerySet[Match]:
        return queryset.filter(route=self.value()) if self.value() else queryset


AMOUNT_RANGES: dict[str, tuple[str, Decimal, Decimal | None]] = {
    "lt100": ("under 100", Decimal("0"), Decimal("100")),
    "100-1k": ("100 – 1,000", Decimal("100"), Decimal("1000")),
    "1k-10k": ("1,000 – 10,000", Decimal("1000"), Decimal("10000")),
    "gte10k": ("10,000 and more", Decimal("10000"), None),
}


class AmountFilter(admin.SimpleListFilter):
    """Ranges of the absolute amount (money in and money out alike)."""

    title = "amount"
    parameter_name = "amount"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _, _) in AMOUNT_RANGES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Match]) -> QuerySet[Match]:
        spec = AMOUNT_RANGES.get(self.value() or "")
        if spec is None:
            return queryset
        _, low, high = spec
        incoming = Q(amount__gte=low)
        outgoing = Q(amount__lte=-low)
        if high is not None:
            incoming &= Q(amount__lt=high)
            outgoing &= Q(amount__gt=-high)
        if low == 0:
            # "under 100": one interval around zero.
            return queryset.filter(amount__gt=-high, amount__lt=high)
        return queryset.filter(incoming | outgoing)


AGE_RANGES: dict[str, tuple[str, int, int | None]] = {
    "week": ("7 days or less", 0, 7),
    "month": ("8 – 30 days", 8, 30),
    "quarter": ("31 – 90 days", 31, 90),
    "older": ("more than 90 days", 91, None),
}


class AgeFilter(admin.SimpleListFilter):
    """Days since the transaction settled (or the document's date)."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _, _) in AGE_RANGES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Match]) -> QuerySet[Match]:
        spec = AGE_RANGES.get(self.value() or "")
        if spec is None:
            return queryset
        _, youngest, oldest = spec
        today = timezone.localdate()
        queryset = queryset.filter(occurred_on__lte=today - timedelta(days=youngest))
        if oldest is not None:
            queryset = queryset.filter(occurred_on__gte=today - timedelta(days=oldest))
        return queryset


# --- query budget ---------------------------------------------------------------------------
# --- shared by the queue and the matches admin -----------------------------------------------
class MatchDisplayMixin:
    """Columns and the review page shared by the queue and the list of all matches."""

    model: type[Model]
    admin_site: admin.AdminSite
    review_template = "admin/reconciliation/review.html"

    @admin.display(description="confidence", ordering="confidence")
    def confidence_display(self, obj: Match) -> str:
        return format_html('<span class="qh-confidence qh-band-{}">{}</span>', obj.band, obj.confidence)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: Match) -> str:
        return f"{obj.amount:,.2f} {obj.currency}"

    @admin.display(description="age", ordering="-occurred_on")
    def age(self, obj: Match) -> str:
        return f"{obj.age_days()} d"

    @admin.display(description="route", ordering="route")
    def route_display(self, obj: Match) -> str:
        route = ROUTES.get(obj.route)
        return route.label if route else obj.route

    @admin.display(description="best candidate")
    def best(self, obj: Match) -> str:
        best = obj.best_candidate()
        return ", ".join(best["labels"]) if best else "—"

    def decide_url_name(self) -> str:
        opts = self.model._meta
        return f"admin:{opts.app_label}_{opts.model_name}_decide"

    def review_page(self, request: HttpRequest, match: Match) -> TemplateResponse:
        """The transaction (or bill, or paid document) beside its candidates and their reasons."""
        route = get_route(match.route)
        subject = match.transaction if match.transaction_id else match.document
        target_model = BankTransaction if route.target_kind == TRANSACTION else Document
        target_ids = {t for c in match.candidates for t in c.get("target_ids", [])}
        targets = {t.pk: t for t in target_model.objects.for_org(match.organization_id).filter(pk__in=target_ids)}
        candidates = []
        for index, cand in enumerate(match.candidates):
            rows = []
            for target_id, label, allocation in zip(cand["target_ids"], cand["labels"], cand["allocations"], strict=False):
                rows.append({"target": targets.get(target_id), "label": label, "allocation": allocation})
            candidates.append({"index": index, "confidence": cand["confidence"], "rows": rows, "features": cand["features"]})
        query = request.GET.get("q", "").strip()
        results = services.search_documents(match.organization_id, query, route=match.route) if query else []
        can_decide = services.can_decide(request.user, match.organization_id)
        policy = services.policy_for(match.organization_id)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Review: {match}",
            "opts": self.model._meta,
            "original": match,
            "match": match,
            "route": route,
            "subject": subject,
            "subject_is_transaction": isinstance(subject, BankTransaction),
            "targets_are_documents": route.target_kind == DOCUMENT,
            "candidates": candidates,
            "query": query,
            "results": results,
            "can_decide": can_decide,
            "can_approve": can_decide and match.status in services.ALLOWED_FROM[services.Action.APPROVE],
            "can_pin": can_decide and match.status in services.ALLOWED_FROM[services.Action.PIN],
            "can_reject": can_decide and match.status in services.ALLOWED_FROM[services.Action.REJECT],
            "can_unmatch": can_decide and match.status in services.ALLOWED_FROM[services.Action.UNMATCH],
            "decide_url": reverse(self.decide_url_name(), args=[match.pk]),
            "decisions": Decision.objects.filter(match=match).select_related("user"),
            "links": match.links.select_related("document", "transaction"),
            "policy": policy,
            "has_view_permission": True,
        }
        return TemplateResponse(request, self.review_template, context)

    def decide_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """POST target of every decision button: parse, check, call ``services.decide``."""
        if request.method != "POST":
            raise Http404("Decisions are POST forms.")
        # Any status: an item decided by someone else meanwhile must answer with the conflict
        # message, not with a 404 from the queue (which lists undecided items only).
        match = Match.objects.visible_to(request.user).filter(pk=pk).first()
        if match is None:
            raise Http404("No such item in your organisations.")
        if not services.can_decide(request.user, match.organization_id):
            return HttpResponseForbidden("Only owners, accountants and reviewers of this organisation decide.")
        action = request.POST.get("action", "")
        version = request.POST.get("version")
        note = request.POST.get("note", "").strip()
        try:
            decided = services.decide(
                match.pk,
                request.user,
                action,
                candidate=int(request.POST.get("candidate") or 0),
                document_ids=[int(v) for v in request.POST.getlist("document_ids") if v.isdigit()],
                note=note,
                expected_version=int(version) if version and version.isdigit() else None,
            )
        except (services.DecisionError, RouteNotWired) as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(self.after_decision_url(match, failed=True))
        messages.success(request, f"{decided.get_status_display()}: {decided}.")
        return HttpResponseRedirect(self.after_decision_url(decided, failed=False))

    def after_decision_url(self, match: Match, failed: bool) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[match.pk])


@admin.register(ReviewItem)
class ReviewItemAdmin(MatchDisplayMixin, TenantAdmin):
    """The reviewers' queue: items in the review band, best first."""

    change_roles = REVIEW_ROLES
    list_display = ["confidence_display", "amount_display", "counterparty", "label", "age", "band", "route_display", "best"]
    list_display_links = ["confidence_display", "amount_display"]
    list_filter = ["band", AmountFilter, AgeFilter, RouteFilter]
    search_fields = ["counterparty"]
    search_help_text = "Search the counterparty as the bank (or the bill) shows it."
    ordering = ["-confidence", "-pk"]
    show_full_result_count = False
    list_per_page = 50
    actions = ["approve_best_candidate"]
    change_list_template = "admin/reconciliation/reviewitem/change_list.html"

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return self.has_change_permission(request)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        match = self.get_queryset(request).filter(pk=_pk(object_id)).first()
        if match is None:
            # Decided meanwhile, or another organisation's: the full list may still show it.
            if Match.objects.visible_to(request.user).filter(pk=_pk(object_id)).exists():
                return HttpResponseRedirect(reverse("admin:reconciliation_match_change", args=[object_id]))
            raise Http404("No such item in your queue.")
        return self.review_page(request, match)

    def after_decision_url(self, match: Match, failed: bool) -> str:
        if failed and match.status == Match.Status.PROPOSED:
            return reverse("admin:reconciliation_reviewitem_change", args=[match.pk])
        # Decided: it left the queue; back to the next item.
        return reverse("admin:reconciliation_reviewitem_changelist")

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/decide/", wrap(self.decide_view), name="reconciliation_reviewitem_decide"),
            path("reconcile-now/", wrap(self.reconcile_now_view), name="reconciliation_reviewitem_reconcile_now"),
        ] + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        user = request.user
        decidable = set() if is_support(user) and not user.is_superuser else organization_ids_for(user, REVIEW_ROLES)
        extra = {"decidable_org_ids": decidable, "routes": ROUTE_CHOICES, "is_superuser": user.is_superuser}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def reconcile_now_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            raise Http404("Reconcile now is a POST form.")
        org = request.POST.get("organization", "")
        route = request.POST.get("route", "qonto_transactions")
        if not org.isdigit() or route not in ROUTES:
            messages.error(request, "Pick an organisation and a route.")
        elif not services.can_decide(request.user, int(org)):
            raise Http404("No such organisation among yours.")
        else:
            tasks.enqueue_reconcile(int(org), route)
            messages.success(request, f"Reconciliation queued ({get_route(route).label}); new items appear here when it ends.")
        return HttpResponseRedirect(reverse("admin:reconciliation_reviewitem_changelist"))

    @admin.action(description="Approve the best candidate of the selected items", permissions=["decide"])
    def approve_best_candidate(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        done, problems = services.approve_best(list(queryset.values_list("pk", flat=True)), request.user)
        if done:
            messages.success(request, f"{len(done)} item(s) approved.")
        for problem in problems[:20]:
            messages.warning(request, problem)


def _pk(object_id: str) -> int:
    return int(object_id) if str(object_id).isdigit() else -1


@admin.register(Match)
class MatchAdmin(MatchDisplayMixin, TenantAdmin):
    """Every match of every route, decided or not (unmatch a posted one from its page)."""

    change_roles = REVIEW_ROLES
    list_display = ["status", "confidence_display", "amount_display", "counterparty", "label", "occurred_on", "band", "route_display", "best", "decider"]
    list_filter = ["status", "band", AmountFilter, AgeFilter, RouteFilter]
    search_fields = ["counterparty", "label"]
    ordering = ["-confidence", "-pk"]
    show_full_result_count = False
    list_per_page = 50

    # Unlike the queue, this list may join: it is read, not worked through at 100,000 rows.
    list_select_related = ["decided_by"]

    @admin.display(description="decided by")
    def decider(self, obj: Match) -> str:
        if obj.status == Match.Status.AUTO_POSTED:
            return "engine"
        return obj.decided_by.email if obj.decided_by else "—"

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        match = self.get_queryset(request).filter(pk=_pk(object_id)).first()
        if match is None:
            raise Http404("No such match in your organisations.")
        return self.review_page(request, match)

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/decide/", wrap(self.decide_view), name="reconciliation_match_decide"),
        ] + super().get_urls()


@admin.register(Decision)
class DecisionAdmin(ReadOnlyTenantAdmin):
    """The audit trail: who decided what, when, why, with which engine version."""

    list_display = ["at", "action", "match", "user", "confidence", "engine_version", "note"]
    list_filter = ["action"]
    list_select_related = ["user", "match"]
    show_full_result_count = False
    readonly_fields = ["match", "action", "user", "at", "note", "engine_version", "confidence", "from_status", "to_status", "candidate"]
    fields = readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(MatchPolicy)
class MatchPolicyAdmin(TenantAdmin):
    """Thresholds per organisation: owners edit, everyone else in the organisation reads."""

    change_roles = OWNER_ONLY
    list_display = ["organization", "auto_threshold", "review_threshold", "updated_at", "updated_by"]
    list_select_related = ["organization", "updated_by"]
    fields = ["organization", "auto_threshold", "review_threshold", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        # One policy per organisation: its organisation does not change after creation.
        return [*self.readonly_fields, "organization"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: MatchPolicy, form: Any, change: bool) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
