"""reconciliation.services: policy bands, targeted re-scoring, decisions and their audit rows.

The data are mirror rows created directly. The engine is real; the cases are chosen so that the
tests hold however its weights are tuned: a reference plus the exact amount is an auto match,
two identical invoices of one counterparty are a tie (never auto, confidence at most 50), a bank
fee with no document has no candidate.
"""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from connectors.models import Connection, RecordLink
from qontohub.models import Membership
from qontohub.tenancy import Role
from reconciliation import services, tasks
from reconciliation.models import Decision, Match, MatchLink, MatchPolicy, ReviewItem
from reconciliation.routes import RouteNotWired, routes_for_provider
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def set_policy(org, auto: int, review: int) -> MatchPolicy:
    policy = services.policy_for(org)
    policy.auto_threshold, policy.review_threshold = auto, review
    policy.save()
    return policy


@pytest.fixture
def books(mirror_a):
    m = mirror_a
    d = {
        "dupont": m.doc("supplier_invoice", "F-2026-0042", "1200.00", "Dupont SAS", date(2026, 3, 1)),
        "leroy1": m.doc("client_invoice", "C-101", "800.00", "Leroy Conseil", date(2026, 3, 1)),
        "leroy2": m.doc("client_invoice", "C-102", "800.00", "Leroy Conseil", date(2026, 3, 1)),
    }
    t = {
        "dupont": m.tx("-1200.00", "VIR SEPA DUPONT", date(2026, 3, 10), label="VIR SEPA DUPONT F-2026-0042"),
        "leroy": m.tx("800.00", "LEROY CONSEIL", date(2026, 3, 12)),
        "fees": m.tx("-42.00", "FRAIS BANCAIRES", date(2026, 3, 12)),
    }
    return m, d, t


def match_of(tx) -> Match:
    return Match.objects.get(route="qonto_transactions", transaction=tx)


def test_policy_bands_route_auto_review_and_refused(books, org_a):
    m, d, t = books
    set_policy(org_a, auto=85, review=30)
    summary = services.reconcile_organization(org_a.pk)
    assert (summary.created, summary.auto_posted, summary.proposed, summary.refused) == (3, 1, 1, 1)

    auto = match_of(t["dupont"])
    assert (auto.status, auto.band) == ("auto_posted", "auto") and auto.confidence >= 85
    assert list(auto.links.values_list("document_id", "transaction_id", "allocated_amount")) == [
        (d["dupont"].pk, t["dupont"].pk, d["dupont"].total_amount)
    ]
    decision = auto.decisions.get()
    assert decision.action == "auto" and decision.user is None and decision.engine_version == auto.engine_version
    # The payment route's poster published the link for apps that cannot import reconciliation.
    link = RecordLink.objects.get(source_id=d["dupont"].external_id)
    assert link.target_type == "bank_transaction" and link.target_id == t["dupont"].external_id

    review = match_of(t["leroy"])
    assert (review.status, review.band) == ("proposed", "review")
    assert 30 <= review.confidence <= 50  # a tie is capped, never auto
    assert {c["target_ids"][0] for c in review.candidates} == {d["leroy1"].pk, d["leroy2"].pk}
    assert all(f["explanation"] for c in review.candidates for f in c["features"])
    assert review.candidates[0]["allocations"] == ["800.00"]
    assert list(ReviewItem.objects.values_list("pk", flat=True)) == [review.pk]
    # Denormalised columns for the queue.
    assert (review.amount, review.currency, review.counterparty, review.occurred_on) == (
        t["leroy"].amount, "EUR", "LEROY CONSEIL", date(2026, 3, 12)
    )

    refused = match_of(t["fees"])
    assert (refused.status, refused.band, refused.candidates) == ("refused", "refused", [])


def test_default_policy_never_auto_posts_a_tie_and_keeps_both_candidates(books, org_a):
    m, d, t = books
    services.reconcile_organization(org_a.pk)
    policy = MatchPolicy.objects.get(organization=org_a)
    assert (policy.auto_threshold, policy.review_threshold) == (85, 55)
    tie = match_of(t["leroy"])
    # Two equally likely invoices: a person chooses (review) or pins later (refused) — never auto.
    assert tie.status in {"proposed", "refused"} and tie.band != "auto"
    assert tie.confidence < 85 and not tie.links.exists()
    assert {c["target_ids"][0] for c in tie.candidates} == {d["leroy1"].pk, d["leroy2"].pk}


def test_a_stricter_policy_sends_the_strong_match_to_review(books, org_a):
    m, d, t = books
    set_policy(org_a, auto=100, review=90)
    services.reconcile_organization(org_a.pk)
    strong = match_of(t["dupont"])
    assert strong.status == "proposed" and strong.band == "review"
    assert not MatchLink.objects.exists() and not Decision.objects.exists()


def test_policy_thresholds_are_checked_by_the_database(org_a):
    with pytest.raises(IntegrityError), transaction.atomic():
        MatchPolicy.objects.create(organization=org_a, auto_threshold=60, review_threshold=70)
    with pytest.raises(IntegrityError), transaction.atomic():
        MatchPolicy.objects.create(organization=org_a, auto_threshold=101, review_threshold=70)


def versions() -> dict[int, tuple[int, str]]:
    return {m.pk: (m.version, m.fingerprint) for m in Match.objects.all()}


def test_only_new_or_touched_subjects_are_rescored(books, org_a):
    m, d, t = books
    set_policy(org_a, auto=85, review=30)
    services.reconcile_organization(org_a.pk)
    before = versions()

    # The bank line now quotes C-101: nothing happens until the subject is said to be touched.
    t["leroy"].label = "VIR LEROY CONSEIL C-101"
    t["leroy"].save()
    again = services.reconcile_organization(org_a.pk)
    assert again.created == again.updated == 0 and versions() == before

    new_tx = m.tx("-15.00", "FRAIS TENUE DE COMPTE", date(2026, 3, 20))
    touched = services.reconcile_organization(org_a.pk, touched_subject_ids=[t["leroy"].pk])
    assert touched.created == 1 and touched.updated == 1
    leroy = match_of(t["leroy"])
    assert leroy.version == before[leroy.pk][0] + 1
    assert leroy.candidates[0]["target_ids"] == [d["leroy1"].pk]
    assert Match.objects.filter(transaction=new_tx).exists()
    others = {pk: v for pk, v in versions().items() if pk in before and pk != leroy.pk}
    assert others == {pk: v for pk, v in before.items() if pk != leroy.pk}


def test_a_touched_document_rescores_the_subjects_it_concerns(books, org_a):
    m, d, t = books
    set_policy(org_a, auto=99, review=30)
    services.reconcile_organization(org_a.pk)
    before = versions()
    fees_doc = m.doc("supplier_invoice", "BQ-2026-03", "42.00", "Banque Populaire", date(2026, 3, 1))

    assert services.reconcile_organization(org_a.pk).updated == 0  # not said to be touched
    summary = services.reconcile_organization(org_a.pk, touched_document_ids=[fees_doc.pk])
    assert summary.updated == 1
    fees = match_of(t["fees"])
    assert fees.candidates and fees.candidates[0]["target_ids"] == [fees_doc.pk]
    assert {pk: v for pk, v in versions().items() if pk != fees.pk} == {
        pk: v for pk, v in before.items() if pk != fees.pk
    }


def test_full_run_writes_only_what_changed(books, org_a):
    m, d, t = books
    services.reconcile_organization(org_a.pk)
    summary = services.reconcile_organization(org_a.pk, full=True)
    assert summary.updated == 0 and summary.created == 0 and summary.unchanged == 2


def test_decided_matches_are_never_changed_by_a_run(books, org_a, reviewer_a):
    m, d, t = books
    set_policy(org_a, auto=85, review=30)
    services.reconcile_organization(org_a.pk)
    leroy = match_of(t["leroy"])
    services.decide(leroy.pk, reviewer_a, "approve", candidate=1)
    fees = match_of(t["fees"])
    services.decide(fees.pk, reviewer_a, "reject", note="bank fee")
    frozen = {mt.pk: (mt.status, mt.version, mt.candidates, mt.fingerprint) for mt in Match.objects.all()}

    t["leroy"].label = "VIR LEROY C-101"
    t["leroy"].save()
    d["dupont"].total_amount = "1250.00"
    d["dupont"].save()
    set_policy(org_a, auto=90, review=20)
    m.doc("supplier_invoice", "BQ-1", "42.00", "Frais bancaires", date(2026, 3, 1))
    services.reconcile_organization(
        org_a.pk, touched_subject_ids=[tx.pk for tx in t.values()],
        touched_document_ids=[doc.pk for doc in d.values()], full=True,
    )
    assert {mt.pk: (mt.status, mt.version, mt.candidates, mt.fingerprint) for mt in Match.objects.all()} == frozen


def test_approve_links_the_candidate_and_records_who_and_why(books, org_a, reviewer_a):
    m, d, t = books
    set_policy(org_a, auto=85, review=30)
    services.reconcile_organization(org_a.pk)
    item = match_of(t["leroy"])
    chosen = item.candidates[1]
    done = services.decide(item.pk, reviewer_a, "approve", candidate=1, note="checked the remittance")
    assert (done.status, done.decided_by, done.note, done.version) == ("approved", reviewer_a, "checked the remittance", item.version + 1)
    assert list(done.links.values_list("document_id", flat=True)) == chosen["target_ids"]
    decision = done.decisions.get()
    assert (decision.action, decision.user, decision.from_status, decision.to_status) == ("approve", reviewer_a, "proposed", "approved")
    assert decision.engine_version == item.engine_version and decision.candidate == chosen
    assert not ReviewItem.objects.filter(pk=item.pk).exists()


def test_pin_finds_documents_by_number_counterparty_or_amount(books, org_a, reviewer_a, mirror_b):
    m, d, t = books
    other = mirror_b.doc("client_invoice", "C-102", "800.00", "Leroy Conseil", date(2026, 3, 1))
    services.reconcile_organization(org_a.pk)
    assert [x.pk for x in services.search_documents(org_a, "C-102")] == [d["leroy2"].pk]
    assert {x.pk for x in services.search_documents(org_a, "leroy")} == {d["leroy1"].pk, d["leroy2"].pk}
    assert {x.pk for x in services.search_documents(org_a, "800,00")} == {d["leroy1"].pk, d["leroy2"].pk}
    assert services.search_documents(org_a, "nothing like this") == []

    item = match_of(t["leroy"])
    with pytest.raises(services.InvalidDecision):
        services.decide(item.pk, reviewer_a, "pin", document_ids=[other.pk])  # org B's document
    done = services.decide(item.pk, reviewer_a, "pin", document_ids=[d["leroy2"].pk], note="per client email")
    assert done.status == "pinned"
    assert list(done.links.values_list("document_id", "allocated_amount")) == [(d["leroy2"].pk, d["leroy2"].total_amount)]
    assert done.decisions.get().action == "pin"


def test_reject_and_unmatch_leave_audit_rows(books, org_a, reviewer_a):
    m, d, t = books
    set_policy(org_a, auto=85, review=30)
    services.reconcile_organization(org_a.pk)
    tie = match_of(t["leroy"])
    rejected = services.decide(tie.pk, reviewer_a, "reject", note="paid by cheque, not this")
    assert rejected.status == "rejected" and not rejected.links.exists()

    auto = match_of(t["dupont"])
    undone = services.decide(auto.pk, reviewer_a, "unmatch", note="wrong supplier")
    assert undone.status == "unmatched" and not undone.links.exists()
    assert not RecordLink.objects.filter(source_id=d["dupont"].external_id).exists()
    actions = list(Decision.objects.order_by("at", "pk").values_list("action", "match_id"))
    assert actions == [("auto", auto.pk), ("reject", tie.pk), ("unmatch", auto.pk)]
    # The unmatched invoice is open again: a run (that does not touch decided items) offers it.
    again = services.decide(auto.pk, reviewer_a, "approve", candidate=0)
    assert again.status == "approved"


@pytest.mark.parametrize("persona", ["owner_a", "reviewer_a", "accountant"])
def test_deciding_roles(books, org_a, persona, request):
    m, d, t = books
    services.reconcile_organization(org_a.pk)
    user = request.getfixturevalue(persona)
    assert services.decide(match_of(t["leroy"]).pk, user, "reject").status == "rejected"


@pytest.mark.parametrize("persona", ["viewer", "support", "outsider"])
def test_viewers_support_and_outsiders_cannot_decide(books, org_a, persona, request):
    m, d, t = books
    services.reconcile_organization(org_a.pk)
    if persona == "viewer":
        user = make_user("viewer-a@example.test")
        Membership.objects.create(organization=org_a, user=user, role=Role.VIEWER)
    else:
        user = request.getfixturevalue(persona)
    item = match_of(t["leroy"])
    status_before = item.status
    with pytest.raises(PermissionDenied):
        services.decide(item.pk, user, "approve")
    item.refresh_from_db()
    assert item.status == status_before and not Decision.objects.filter(match=item).exists()


def test_the_second_decision_gets_a_conflict_naming_the_first(books, org_a, reviewer_a, owner_a):
    m, d, t = books
    set_policy(org_a, auto=85, review=30)
    services.reconcile_organization(org_a.pk)
    item = match_of(t["leroy"])
    services.decide(item.pk, reviewer_a, "approve", expected_version=item.version)
    with pytest.raises(services.DecisionConflict) as err:
        services.decide(item.pk, owner_a, "reject", expected_version=item.version)
    assert reviewer_a.email in str(err.value) and "approved" in str(err.value)
    with pytest.raises(services.DecisionConflict):
        services.decide(item.pk, owner_a, "approve")


def test_a_rescored_item_refuses_a_decision_on_the_old_candidates(books, org_a, reviewer_a):
    m, d, t = books
    set_policy(org_a, auto=100, review=30)
    services.reconcile_organization(org_a.pk)
    item = match_of(t["leroy"])
    t["leroy"].label = "VIR LEROY C-102"
    t["leroy"].save()
    services.reconcile_organization(org_a.pk, touched_subject_ids=[t["leroy"].pk])
    with pytest.raises(services.DecisionConflict, match="candidates changed"):
        services.decide(item.pk, reviewer_a, "approve", expected_version=item.version)


def test_a_document_is_not_settled_twice(books, org_a, reviewer_a):
    m, d, t = books
    set_policy(org_a, auto=99, review=30)
    twin = m.tx("800.00", "LEROY CONSEIL", date(2026, 3, 13))
    services.reconcile_organization(org_a.pk)
    first, second = match_of(t["leroy"]), match_of(twin)
    services.decide(first.pk, reviewer_a, "pin", document_ids=[d["leroy1"].pk])
    with pytest.raises(services.InvalidDecision, match="already settled"):
        services.decide(second.pk, reviewer_a, "pin", document_ids=[d["leroy1"].pk])
    assert services.decide(second.pk, reviewer_a, "pin", document_ids=[d["leroy2"].pk]).status == "pinned"


@pytest.fixture
def unwired_bills_route(monkeypatch):
    """The bills route as it was before the QuickBooks flow declared its poster."""
    from reconciliation import routes

    route = dataclasses.replace(routes.ROUTES["quickbooks_bills"], poster=None, batch_poster=None)
    monkeypatch.setitem(routes.ROUTES, "quickbooks_bills", route)
    return route


def test_a_route_without_poster_holds_its_auto_band_for_review(mirror_a, org_a, reviewer_a, unwired_bills_route):
    m = mirror_a
    invoice = m.doc("supplier_invoice", "INV-7781", "960.00", "Imprimerie Moreau", date(2026, 2, 1), status="to_pay")
    bill = m.doc("bill", "INV-7781", "960.00", "Imprimerie Moreau", date(2026, 2, 1))
    set_policy(org_a, auto=85, review=30)
    summary = services.reconcile_organization(org_a.pk, "quickbooks_bills")
    item = Match.objects.get(route="quickbooks_bills", document=bill)
    assert item.candidates[0]["target_ids"] == [invoice.pk]
    assert item.status == "proposed"
    if item.band == "auto":
        assert summary.held_for_review == 1
    with pytest.raises(RouteNotWired, match="quickbooks_bills"):
        services.decide(item.pk, reviewer_a, "approve")
    item.refresh_from_db()
    assert item.status == "proposed" and not item.links.exists() and not item.decisions.exists()


def test_tax_documents_route_finds_the_transaction_that_paid_a_document(mirror_a, org_a, reviewer_a):
    m = mirror_a
    paid = m.doc("supplier_invoice", "F-2026-0099", "480.00", "Atelier Roux", date(2026, 2, 1), status="paid")
    tx = m.tx("-480.00", "ATELIER ROUX", date(2026, 2, 20), label="VIR ATELIER ROUX F-2026-0099")
    set_policy(org_a, auto=85, review=30)
    services.reconcile_organization(org_a.pk, "tax_documents")
    item = Match.objects.get(route="tax_documents", document=paid)
    assert item.candidates[0]["target_ids"] == [tx.pk]
    assert item.amount == -paid.total_amount and item.counterparty == "Atelier Roux"
    if item.status == "proposed":
        services.decide(item.pk, reviewer_a, "approve")
    item.refresh_from_db()
    assert item.status in ("auto_posted", "approved")
    assert list(item.links.values_list("document_id", "transaction_id")) == [(paid.pk, tx.pk)]
    # The transaction is settled for the family: the forward route no longer offers it.
    services.reconcile_organization(org_a.pk, "qonto_transactions")
    assert not Match.objects.filter(route="qonto_transactions", transaction=tx).exists()


def test_other_organisations_documents_are_never_candidates(books, org_a, mirror_b):
    m, d, t = books
    mirror_b.doc("supplier_invoice", "BQ-42", "42.00", "Frais bancaires", date(2026, 3, 1))
    services.reconcile_organization(org_a.pk)
    assert match_of(t["fees"]).candidates == []


def test_writes_are_bulk_not_per_row(mirror_a, org_a, django_assert_max_num_queries):
    m = mirror_a
    for i in range(40):
        m.doc("client_invoice", f"C-9{i:03d}", f"{100 + i}.00", f"Client {i} SAS", date(2026, 3, 1))
        m.tx(f"{100 + i}.00", f"CLIENT {i}", date(2026, 3, 10), label=f"VIR CLIENT {i} C-9{i:03d}")
    with django_assert_max_num_queries(25):
        summary = services.reconcile_organization(org_a.pk)
    assert summary.created == 40 and summary.auto_posted == 40


def test_after_sync_reconciles_the_connections_organisation(books, org_a):
    m, d, t = books
    assert tasks.after_sync(m.qonto.pk, 0) == []
    firm_connection = Connection.objects.create(firm=org_a.firm, provider="pennylane")
    assert tasks.after_sync(firm_connection.pk, 5) == []
    # Tasks run inline in tests (tests/conftest.py): one per route that reads Qonto records.
    assert len(tasks.after_sync(m.qonto.pk, 3)) == len(routes_for_provider("qonto")) >= 2
    assert Match.objects.filter(route="qonto_transactions").count() == 3
    new_tx = m.tx("-9.90", "ABONNEMENT", date(2026, 3, 25))
    tasks.after_sync(m.qonto.pk, {"transactions": [new_tx.pk], "documents": []})
    assert Match.objects.filter(transaction=new_tx).exists()
