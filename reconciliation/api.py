"""REST endpoints of the review queue: list and read items, decide one, list every match.

* ``GET /api/v1/review-items/`` — items in review (``status=proposed``) unless ``status`` says
  otherwise (comma-separated); filters ``band``, ``status``, ``organization``, ``route``.
* ``GET /api/v1/review-items/{id}/`` — one item, whatever its status, with its candidates.
* ``POST /api/v1/review-items/{id}/decision/`` — ``{"action": "approve"|"pin"|"reject"|"unmatch",
  "candidate": 0, "document_ids": [..], "note": "..", "version": 3}``. 403 without a deciding role
  (viewers, support), 404 for another organisation's item, 409 when someone decided first or the
  candidates changed since ``version``, 400 for a malformed request.
* ``GET /api/v1/matches/`` — every match, same filters.

Querysets go through ``visible_to(request.user)`` (the ``TenantViewSet`` base); deciding goes
through ``services.decide``, which holds every rule.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from qontohub.api import TenantViewSet, router
from reconciliation import services
from reconciliation.models import Match
from reconciliation.routes import ROUTES, RouteNotWired


class FeatureSerializer(serializers.Serializer):
    name = serializers.CharField()
    score = serializers.FloatField()
    explanation = serializers.CharField()


class CandidateSerializer(serializers.Serializer):
    target_ids = serializers.ListField(child=serializers.IntegerField())
    labels = serializers.ListField(child=serializers.CharField())
    allocations = serializers.ListField(child=serializers.CharField())
    confidence = serializers.IntegerField(allow_null=True)
    features = FeatureSerializer(many=True)


class MatchSerializer(serializers.ModelSerializer):
    subject_type = serializers.SerializerMethodField()
    subject_id = serializers.IntegerField(read_only=True)
    target_type = serializers.SerializerMethodField()

    class Meta:
        model = Match
        fields = [
            "id", "organization", "route", "subject_type", "subject_id", "target_type", "status", "band",
            "confidence", "amount", "currency", "counterparty", "label", "occurred_on", "engine_version",
            "version", "decided_by", "decided_at", "note", "scored_at",
        ]

    def get_subject_type(self, obj: Match) -> str:
        return "bank_transaction" if obj.transaction_id else "document"

    def get_target_type(self, obj: Match) -> str:
        route = ROUTES.get(obj.route)
        return "bank_transaction" if route and route.target_kind == "transaction" else "document"


class MatchDetailSerializer(MatchSerializer):
    candidates = CandidateSerializer(many=True)

    class Meta(MatchSerializer.Meta):
        fields = [*MatchSerializer.Meta.fields, "candidates"]


class DecisionRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=services.Action.ALL)
    candidate = serializers.IntegerField(required=False, default=0, min_value=0)
    document_ids = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    version = serializers.IntegerField(required=False, allow_null=True, default=None,
                                       help_text="The version you read: refused with 409 if the item changed since.")


FILTERS = [
    OpenApiParameter("organization", int),
    OpenApiParameter("route", str, enum=list(ROUTES)),
    OpenApiParameter("band", str, enum=[b.value for b in Match.Band]),
    OpenApiParameter("status", str, description="Comma-separated statuses."),
]


class _MatchFilters(TenantViewSet):
    queryset = Match.objects.all()
    default_status: str | None = None

    def get_queryset(self) -> QuerySet[Match]:
        qs = super().get_queryset()
        params = self.request.query_params
        if params.get("route"):
            qs = qs.filter(route=params["route"])
        if params.get("band"):
            qs = qs.filter(band=params["band"])
        statuses = params.get("status") or (self.default_status if self.action == "list" else None)
        if statuses:
            wanted = [s for s in statuses.split(",") if s]
            unknown = set(wanted) - set(Match.Status.values)
            if unknown:
                raise ValidationError({"status": f"Unknown status {', '.join(sorted(unknown))}."})
            qs = qs.filter(status__in=wanted)
        return qs

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return MatchSerializer if self.action == "list" else MatchDetailSerializer


@extend_schema(parameters=FILTERS)
class ReviewItemViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _MatchFilters):
    """The review queue: items waiting for a reviewer, and their decisions."""

    default_status = Match.Status.PROPOSED

    @extend_schema(request=DecisionRequestSerializer, responses={200: MatchDetailSerializer})
    @action(detail=True, methods=["post"], url_path="decision")
    def decision(self, request: Request, pk: str | None = None) -> Response:
        match = self.get_object()  # another organisation's item: 404
        if not services.can_decide(request.user, match.organization_id):
            raise PermissionDenied("Deciding needs the owner, accountant or reviewer role in this organisation.")
        body = DecisionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data: dict[str, Any] = body.validated_data
        try:
            decided = services.decide(
                match.pk, request.user, data["action"], candidate=data["candidate"],
                document_ids=data["document_ids"], note=data["note"], expected_version=data["version"],
            )
        except services.DecisionConflict as exc:
            return Response({"detail": str(exc), "code": "conflict"}, status=status.HTTP_409_CONFLICT)
        except RouteNotWired as exc:
            return Response({"detail": str(exc), "code": "route_not_wired"}, status=status.HTTP_409_CONFLICT)
        except services.InvalidDecision as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        return Response(MatchDetailSerializer(decided).data)


@extend_schema(parameters=FILTERS)
class MatchViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _MatchFilters):
    """Every match of every route, decided or not."""


router.register("review-items", ReviewItemViewSet, basename="review-item")
router.register("matches", MatchViewSet, basename="match")
