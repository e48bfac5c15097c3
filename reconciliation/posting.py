"""Posters of the payment routes: publish "this document was paid by these transactions".

The hub's own record of a posted match is its ``MatchLink`` rows. Apps to the left of
reconciliation (accountant's document pull, connectors) may not import it, so the payment
routes' poster mirrors each link into ``connectors.RecordLink``, the hub-wide table of "what a
record is tied to elsewhere": one row per document (source ``qonto``/<kind>/<external id>,
target ``qonto``/``bank_transaction``), whose ``data`` lists every transaction that settles it
with the allocated amount and the match. A document paid in instalments keeps one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.models import RecordLink

if TYPE_CHECKING:
    from reconciliation.models import Match

TARGET_TYPE = "bank_transaction"


def _pairs(matches: Sequence[Match]) -> list[tuple[int, Any, Any, str, Match]]:
    """(organization id, document, transaction, allocated amount, match) for each link."""
    from reconciliation.models import MatchLink

    links = MatchLink.objects.filter(match__in=[m.pk for m in matches]).select_related(
        "document", "transaction"
    )
    by_pk = {m.pk: m for m in matches}
    return [
        (link.organization_id, link.document, link.transaction, str(link.allocated_amount), by_pk[link.match_id])
        for link in links
        if link.document is not None and link.transaction is not None
    ]


def _key(org_id: int, document: Any) -> tuple[int, str, str]:
    return (org_id, document.kind, document.external_id)


def _existing(keys: set[tuple[int, str, str]]) -> dict[tuple[int, str, str], RecordLink]:
    if not keys:
        return {}
    org_ids = {k[0] for k in keys}
    ext_ids = {k[2] for k in keys}
    rows = RecordLink.objects.filter(
        organization_id__in=org_ids,
        source_provider="qonto",
        source_id__in=ext_ids,
        target_provider="qonto",
        target_type=TARGET_TYPE,
    )
    return {(r.organization_id, r.source_type, r.source_id): r for r in rows}


def _finish(record: RecordLink) -> None:
    paid_by = record.data.get("paid_by", [])
    record.target_id = paid_by[0]["transaction"] if len(paid_by) == 1 else ""


def record_payment_links(matches: Sequence[Match]) -> None:
    """Batch poster: add each posted match's (document, transaction) pairs to RecordLink."""
    pairs = _pairs(matches)
    existing = _existing({_key(org, doc) for org, doc, _, _, _ in pairs})
    created: dict[tuple[int, str, str], RecordLink] = {}
    changed: dict[int, RecordLink] = {}
    for org, doc, tx, allocated, match in pairs:
        key = _key(org, doc)
        record = existing.get(key) or created.get(key)
        if record is None:
            record = RecordLink(
                organization_id=org,
                source_provider="qonto",
                source_type=doc.kind,
                source_id=doc.external_id,
                target_provider="qonto",
                target_type=TARGET_TYPE,
                data={"paid_by": []},
            )
            created[key] = record
        elif record.pk is not None:
            changed[record.pk] = record
        entries = [e for e in record.data.get("paid_by", []) if e.get("match") != match.pk or e.get("transaction") != tx.external_id]
        entries.append({"transaction": tx.external_id, "allocated": allocated, "match": match.pk, "route": match.route})
        record.data = {**record.data, "paid_by": entries}
        _finish(record)
    if created:
        RecordLink.objects.bulk_create(list(created.values()))
    if changed:
        RecordLink.objects.bulk_update(list(changed.values()), ["data", "target_id"])


def remove_payment_links(match: Match) -> None:
    """Unposter: take the match's transactions off its documents' RecordLink rows."""
    pairs = _pairs([match])
    existing = _existing({_key(org, doc) for org, doc, _, _, _ in pairs})
    for record in existing.values():
        entries = [e for e in record.data.get("paid_by", []) if e.get("match") != match.pk]
        if entries:
            record.data = {**record.data, "paid_by": entries}
            _finish(record)
            record.save(update_fields=["data", "target_id", "updated_at"])
        else:
            record.delete()
