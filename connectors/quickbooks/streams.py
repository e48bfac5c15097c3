"""What the hub reads from QuickBooks Online, stream by stream, and how each record is mirrored.

Facts are from ``shared/reference/peer-apis.md`` §1 (section numbers below are that file's).

Streams, in the order the sync engine runs them (bills read the vendors mirrored just before,
attachments point the bills at their files):

=================  ==================  ===============================================
stream             QuickBooks entity   mirror
=================  ==================  ===============================================
accounts           Account (Bank)      ``BankAccount`` (bank-type accounts only)
vendors            Vendor              ``Counterparty`` (supplier)
customers          Customer            ``Counterparty`` (customer)
bills              Bill                ``Document`` (bill) + ``DocumentLine``
attachments        Attachable          ``Attachment`` (parent ``Bill:145``…)
purchases          Purchase            ``BankTransaction`` (money out, signed)
purchase_orders    PurchaseOrder       ``Document`` (purchase order) + lines
invoices           Invoice             ``Document`` (client invoice) + lines
credit_memos       CreditMemo          ``Document`` (credit note) + lines
payments           Payment             ``RemoteRecord``
=================  ==================  ===============================================

How a stream reads (§1.4, §1.5):

* **Query endpoint.** ``SELECT * FROM <Entity> WHERE MetaData.LastUpdatedTime > '<cursor>'
  ORDERBY MetaData.LastUpdatedTime STARTPOSITION n MAXRESULTS 1000`` with ``minorversion=75``
  (§1.3: lower versions are answered as 75 since August 2025). The cursor comparison is strict, as
  the hub's cursor is the ``LastUpdatedTime`` of a record already stored. Pages are chained by
  *keyset*: the next page asks for ``LastUpdatedTime >= <last time of this page>`` and drops the
  records of that second it already has (``STARTPOSITION`` only moves on when a whole page shares
  one second). An offset alone would skip a record whenever one already read is edited while we
  page, because it then moves to the end of the order; an edited record can only move forward in
  time, so the keyset never misses one.
* **First sync.** Without a cursor, transaction entities (bills, invoices…) are read from the
  history start the person picked (``connection.options["history_start"]``, a date) by
  ``TxnDate``; name lists (vendors, customers, accounts) and attachments are read whole.
* **Change Data Capture.** An incremental read whose cursor is less than
  :data:`CDC_WINDOW_DAYS` old (the endpoint looks back at most 30 days, §1.5) asks
  ``/cdc?entities=<Entity>&changedSince=<cursor>`` first: one request that also reports deleted
  transactions (``"status": "Deleted"`` stubs, which a query never returns). That is what the hourly
  poll and the early polls a webhook triggers use. A CDC answer of 1,000 objects may be truncated
  (§1.5), and Attachable is not a CDC entity (inferred: "not all entities are supported"); both
  fall back to the query.
* **Cursor.** The stream's cursor is the moment of its last successful read by Intuit's clock
  (the answer's ``time``, less one second: :func:`sync_mark`), so "strictly newer than the last
  successful sync" never loses a record written in the second of the read.
* **Deleted stubs** only mark a row the hub already has (status ``deleted``, attachment detached);
  a stub for something never mirrored is dropped.

Money is Decimal from the JSON number's shortest spelling; ``TempDownloadUri`` is removed from
what is stored (it changes on every read, §1.7, and would make every row look changed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps
from django.db.models import Case, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from connectors.base import CursorState, Page, Row, Stream, ValidationFailed
from connectors.models import Document, DocumentLine
from connectors.quickbooks.mapping import VERSION_KEY, convert, lookup

if TYPE_CHECKING:
    from connectors.quickbooks.connector import QuickBooksConnector

#: §1.4: at most 1000 rows per query page (the default is 100).
MAX_RESULTS = 1000
#: §1.5: CDC looks back at most 30 days; one day of margin for clocks and time zones.
CDC_WINDOW_DAYS = 29
#: §1.5: a CDC response holds at most 1,000 objects; a full one may have left some out.
CDC_MAX_OBJECTS = 1000
#: Keys of an Attachable that are short-lived signed URLs (§1.7).
VOLATILE_KEYS = ("TempDownloadUri", "ThumbnailTempDownloadUri")
CENT = Decimal("0.01")


# --- small readers ----------------------------------------------------------------------------
def clip(value: Any, length: int) -> str:
    return "" if value is None else str(value)[:length]


def moment(value: Any) -> datetime | None:
    """A ``MetaData`` time (§1.3: ISO 8601 with an offset) as an aware datetime."""
    if not value:
        return None
    parsed = parse_datetime(str(value))
    if parsed is None:
        raise ValueError(f"MetaData.LastUpdatedTime {value!r} is not an ISO 8601 date and time")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def last_updated(record: Mapping[str, Any]) -> str | None:
    meta = record.get("MetaData")
    value = meta.get("LastUpdatedTime") if isinstance(meta, Mapping) else None
    return str(value) if value else None


def is_stub(record: Mapping[str, Any]) -> bool:
    """§1.5: a deleted object comes back as ``{"status": "Deleted", "Id", "MetaData"}``."""
    return str(record.get("status") or "").lower() == "deleted"


def money(value: Any, name: str) -> Decimal | None:
    return convert("money", value, name)


def quote(value: str) -> str:
    """A string literal of the query language (§1.4: single quotes, escaped by hand)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def latest(values: list[str]) -> str | None:
    """The latest of several ``LastUpdatedTime`` strings, compared as instants."""
    best: tuple[datetime, str] | None = None
    for value in values:
        when = moment(value)
        if when is not None and (best is None or when > best[0]):
            best = (when, value)
    return best[1] if best else None


def sync_mark(answered: Any) -> str | None:
    """The cursor a run leaves: the provider's ``time`` at its first answer, to the second, less one.

    ``MetaData.LastUpdatedTime`` has whole seconds (§1.3), so a record written in the same second
    as the read, just after it, carries a time equal to the read's second: the next run's strict
    ``>`` must start one second earlier to see it. Intuit's own clock is used, not ours, so clock
    skew cannot hide a change. Records of that second are read twice; their unchanged fingerprints
    make the second read free.
    """
    when = moment(answered) if answered else None
    if when is None:
        return None
    return (when.replace(microsecond=0) - timedelta(seconds=1)).isoformat()


def history_start(connector: QuickBooksConnector) -> date | None:
    """The first day the person asked to import (``options["history_start"]``), if any."""
    raw = (connector.connection.options or {}).get("history_start")
    if not raw:
        return None
    day = raw if isinstance(raw, date) else parse_date(str(raw)[:10])
    if day is None:
        raise ValidationFailed(
            f"The connection's history start {raw!r} is not a date (YYYY-MM-DD); fix it in the "
            "QuickBooks connection settings."
        )
    return day


# --- the query-endpoint stream ----------------------------------------------------------------
class QueryStream(Stream):
    """One QuickBooks entity read through ``/query`` (and ``/cdc`` when its window fits)."""

    entity: ClassVar[str]
    #: Fixed conditions of every query (e.g. only bank accounts), in the query language.
    conditions: ClassVar[tuple[str, ...]] = ()
    #: Transaction entities: the first sync starts at the history start date (``TxnDate``).
    dated: ClassVar[bool] = False
    #: Whether Change Data Capture serves this entity (§1.5).
    cdc: ClassVar[bool] = True

    # -- reading ---------------------------------------------------------------------------
    def pages(self, connector: QuickBooksConnector, cursor: CursorState) -> Iterator[Page]:  # type: ignore[override]
        position = dict(cursor.position or {})
        if position.get("mode") == "query":
            # An interrupted run resumes its keyset where the last saved page left it.
            yield from self.query_pages(connector, position)
            return
        if cursor.value and self.cdc and self.fits_cdc(cursor.value):
            page = self.cdc_page(connector, cursor.value)
            if page is not None:
                yield page
                return
        start: dict[str, Any] = {"mode": "query", "after": cursor.value or None}
        if not cursor.value and self.dated:
            first_day = history_start(connector)
            if first_day is not None:
                start["from_date"] = first_day.isoformat()
        yield from self.query_pages(connector, start)

    @staticmethod
    def fits_cdc(value: str) -> bool:
        when = moment(value)
        return when is not None and when > timezone.now() - timedelta(days=CDC_WINDOW_DAYS)

    def wanted(self, record: Mapping[str, Any]) -> bool:
        """Records of this stream among those CDC returns (CDC has no WHERE clause)."""
        return True

    def statement(self, state: Mapping[str, Any]) -> str:
        conditions = list(self.conditions)
        if state.get("since"):
            conditions.append(f"MetaData.LastUpdatedTime >= {quote(state['since'])}")
        elif state.get("after"):
            conditions.append(f"MetaData.LastUpdatedTime > {quote(state['after'])}")
        if state.get("from_date"):
            conditions.append(f"TxnDate >= {quote(state['from_date'])}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return (
            f"SELECT * FROM {self.entity}{where} ORDERBY MetaData.LastUpdatedTime "
            f"STARTPOSITION {int(state.get('start') or 1)} MAXRESULTS {MAX_RESULTS}"
        )

    def query_pages(self, connector: QuickBooksConnector, state: dict[str, Any]) -> Iterator[Page]:
        state = dict(state)
        while True:
            records, answered = connector.query(self.statement(state), self.entity)
            if not state.get("mark"):
                # The run's mark is taken from the first answer and kept in the position, so a
                # resumed run ends on the same mark.
                state["mark"] = sync_mark(answered)
            seen = set(state.get("seen") or ())
            fresh = [r for r in records if str(r.get("Id")) not in seen]
            times = [t for t in (last_updated(r) for r in records) if t]
            high = latest(times)
            if len(records) < MAX_RESULTS or high is None:
                yield Page(records=self.keep(connector, fresh), position={}, high_water=state["mark"] or high)
                return
            boundary = moment(high)
            at_boundary = [str(r.get("Id")) for r in records if moment(last_updated(r)) == boundary]
            if state.get("since") and moment(state["since"]) == boundary:
                # A whole page in one second: only here does the offset move on.
                state["start"] = int(state.get("start") or 1) + len(records)
                state["seen"] = sorted(seen | set(at_boundary))
            else:
                state.update(since=high, start=1, seen=at_boundary)
                state.pop("after", None)
            yield Page(
                records=self.keep(connector, fresh), position=dict(state), high_water=state["mark"] or high
            )

    def cdc_page(self, connector: QuickBooksConnector, since: str) -> Page | None:
        """Changes strictly after ``since`` in one request, or None when the query must be used."""
        try:
            records, answered = connector.cdc(self.entity, since)
        except ValidationFailed:
            # Outside the window by the provider's clock, or refused: the query always works.
            return None
        if len(records) >= CDC_MAX_OBJECTS:
            return None
        after = moment(since)
        changed = [
            r
            for r in records
            if (when := moment(last_updated(r))) is not None
            and after is not None
            and when > after
            and (is_stub(r) or self.wanted(r))
        ]
        high = sync_mark(answered) or latest([t for t in (last_updated(r) for r in changed) if t])
        return Page(records=self.keep(connector, changed), position={}, high_water=high)

    def keep(self, connector: QuickBooksConnector, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop deletion stubs of records never mirrored (one query per page that has stubs)."""
        stub_ids = [str(r.get("Id")) for r in records if is_stub(r)]
        if not stub_ids:
            return records
        model = apps.get_model(self.model)
        known = set(
            model.objects.filter(
                connection=connector.connection, stream=self.name, external_id__in=stub_ids
            ).values_list("external_id", flat=True)
        )
        return [r for r in records if not is_stub(r) or str(r.get("Id")) in known]

    # -- mapping ---------------------------------------------------------------------------
    def to_row(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> Row:  # type: ignore[override]
        external_id = clip(record.get("Id"), 200)
        raw = {k: v for k, v in record.items() if k not in VOLATILE_KEYS}
        if is_stub(record):
            fields = self.stub_fields(record)
        else:
            fields = self.fields(connector, record)
        fields["remote_updated_at"] = moment(last_updated(record))
        return Row(external_id=external_id, fields=fields, raw=raw)

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__}.fields")

    def stub_fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"status": "deleted"}


# --- name lists -------------------------------------------------------------------------------
class AccountsStream(QueryStream):
    """Bank-type accounts of the chart (§1.6 Account: ``AccountType`` ``Bank``)."""

    name = "accounts"
    entity = "Account"
    model = "connectors.BankAccount"
    conditions = ("AccountType = 'Bank'",)

    def wanted(self, record: Mapping[str, Any]) -> bool:
        return record.get("AccountType") == "Bank"

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        currency = convert("currency", lookup(record, "CurrencyRef"), "Account.CurrencyRef") or "EUR"
        return {
            "name": clip(record.get("FullyQualifiedName") or record.get("Name"), 200),
            "currency": currency,
            "balance": money(record.get("CurrentBalance"), "Account.CurrentBalance"),
            # §1.6 Account: "delete" = Active false.
            "status": "active" if record.get("Active", True) else "inactive",
        }


class VendorsStream(QueryStream):
    """Vendors, mapped by ``mapping.py`` (DisplayName, WebAddr, TaxIdentifier)."""

    name = "vendors"
    entity = "Vendor"
    model = "connectors.Counterparty"

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        mapping = connector.field_mapping()
        tax_id = mapping.read("Vendor", record, "supplier_tax_id") or ""
        country = clip(lookup(record, "BillAddr.Country"), 2).upper()
        return {
            "role": "supplier",
            "name": clip(mapping.read("Vendor", record, "supplier_name") or record.get("CompanyName"), 300),
            "legal_name": clip(record.get("CompanyName"), 300),
            "tax_id": clip(tax_id, 50),
            "vat_number": clip(tax_id if tax_id[:2].isalpha() else "", 50),
            "email": clip(lookup(record, "PrimaryEmailAddr"), 254),
            "website": clip(mapping.read("Vendor", record, "supplier_website"), 300),
            "country": country if len(country) == 2 and country.isalpha() else "",
            "currency": clip(lookup(record, "CurrencyRef"), 3),
        }

    def to_row(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> Row:  # type: ignore[override]
        row = super().to_row(connector, record)
        row.raw[VERSION_KEY] = connector.field_mapping().version
        return row


class CustomersStream(QueryStream):
    name = "customers"
    entity = "Customer"
    model = "connectors.Counterparty"

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        tax_id = clip(record.get("PrimaryTaxIdentifier"), 50)
        country = clip(lookup(record, "BillAddr.Country"), 2).upper()
        return {
            "role": "customer",
            "name": clip(record.get("DisplayName") or record.get("CompanyName"), 300),
            "legal_name": clip(record.get("CompanyName"), 300),
            "tax_id": tax_id,
            "vat_number": tax_id if tax_id[:2].isalpha() else "",
            "email": clip(lookup(record, "PrimaryEmailAddr"), 254),
            "website": clip(lookup(record, "WebAddr"), 300),
            "country": country if len(country) == 2 and country.isalpha() else "",
            "currency": clip(lookup(record, "CurrencyRef"), 3),
        }


# --- documents --------------------------------------------------------------------------------
class DocumentStream(QueryStream):
    """Transactions with lines: a ``Document`` and its ``DocumentLine`` rows (§1.6 ``Line[]``)."""

    model = "connectors.Document"
    dated = True
    kind: ClassVar[str]
    party_ref: ClassVar[str]

    def __init__(self) -> None:
        # Lines parsed by to_row (a bad line fails its record, not the page), written by
        # save_related once the documents have ids.
        self._lines: dict[str, list[DocumentLine]] = {}

    def stub_fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"status": "deleted"}

    def to_row(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> Row:  # type: ignore[override]
        row = super().to_row(connector, record)
        if not is_stub(record):
            self._lines[row.external_id] = self.lines(record)
        return row

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        name = self.entity
        total = money(record.get("TotalAmt"), f"{name}.TotalAmt") or Decimal("0.00")
        balance = money(record.get("Balance"), f"{name}.Balance")
        return {
            "kind": self.kind,
            "number": clip(record.get("DocNumber"), 100),
            "counterparty_external_id": clip(lookup(record, f"{self.party_ref}"), 200),
            "counterparty_name": clip((record.get(self.party_ref) or {}).get("name"), 300),
            "total_amount": total,
            "tax_amount": money(lookup(record, "TxnTaxDetail.TotalTax"), f"{name}.TxnTaxDetail.TotalTax"),
            "currency": convert("currency", lookup(record, "CurrencyRef"), f"{name}.CurrencyRef") or "EUR",
            "issue_date": convert("date", record.get("TxnDate"), f"{name}.TxnDate"),
            "due_date": convert("date", record.get("DueDate"), f"{name}.DueDate"),
            "status": self.status(record, total, balance),
        }

    def status(self, record: Mapping[str, Any], total: Decimal, balance: Decimal | None) -> str:
        if balance is not None and balance == 0 and total > 0:
            return "paid"
        return "open"

    def lines(self, record: Mapping[str, Any]) -> list[DocumentLine]:
        raw_lines = record.get("Line") or []
        if not isinstance(raw_lines, list):
            raise ValueError("Line is not a list")
        tax_lines = lookup(record, "TxnTaxDetail.TaxLine") or []
        # One tax rate for the whole document is the only case where a line's rate is known.
        rate = None
        if isinstance(tax_lines, list) and len(tax_lines) == 1:
            percent = lookup(tax_lines[0], "TaxLineDetail.TaxPercent")
            rate = money(percent, "TaxLineDetail.TaxPercent") if percent not in (None, "") else None
        lines: list[DocumentLine] = []
        for position, line in enumerate(raw_lines, start=1):
            if not isinstance(line, Mapping):
                raise ValueError(f"line {position} is not an object")
            detail_type = str(line.get("DetailType") or "")
            if detail_type in ("SubTotalLineDetail", "DiscountLineDetail", "GroupLineDetail"):
                continue
            detail = line.get(detail_type) if isinstance(line.get(detail_type), Mapping) else {}
            label = f"line {position}"
            quantity = (
                money(detail.get("Qty"), f"{label} Qty") if detail.get("Qty") not in (None, "") else None
            )
            account = (
                lookup(detail, "AccountRef") or lookup(detail, "ItemAccountRef") or lookup(detail, "ItemRef")
            )
            lines.append(
                DocumentLine(
                    position=int(line.get("LineNum") or position),
                    description=clip(line.get("Description") or lookup(detail, "ItemRef.name") or "", 500),
                    quantity=quantity if quantity is not None else Decimal("1"),
                    unit_price=money(detail.get("UnitPrice"), f"{label} UnitPrice"),
                    amount=money(line.get("Amount"), f"{label} Amount") or Decimal("0.00"),
                    vat_rate=rate,
                    account_code=clip(account, 30),
                )
            )
        return lines

    def save_related(self, connector: QuickBooksConnector, saved: list[tuple[Any, Row]]) -> None:
        if any(doc.pk is None for doc, _ in saved):
            # The engine's bulk upsert does not return ids: one query for the page's documents.
            ids = dict(
                Document.objects.filter(
                    connection=connector.connection,
                    stream=self.name,
                    external_id__in=[r.external_id for _, r in saved],
                ).values_list("external_id", "pk")
            )
            for doc, row in saved:
                doc.pk = ids[row.external_id]
        DocumentLine.objects.filter(
            document_id__in=[doc.pk for doc, row in saved if row.external_id in self._lines]
        ).delete()
        lines: list[DocumentLine] = []
        for document, row in saved:
            for line in self._lines.pop(row.external_id, []):
                line.document_id = document.pk
                lines.append(line)
        DocumentLine.objects.bulk_create(lines, batch_size=1000)


class BillsStream(DocumentStream):
    """Bills, mapped by ``mapping.py``; the vendor's tax id is copied from the vendors mirror."""

    name = "bills"
    entity = "Bill"
    kind = Document.Kind.BILL
    party_ref = "VendorRef"

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        mapping = connector.field_mapping()
        fields = super().fields(connector, record)
        vendor_id = fields["counterparty_external_id"]
        vendor = connector.vendor_index().get(vendor_id, {})
        total = mapping.read("Bill", record, "total_amount")
        fields.update(
            number=clip(mapping.read("Bill", record, "invoice_number"), 100),
            total_amount=total if total is not None else Decimal("0.00"),
            tax_amount=mapping.read("Bill", record, "tax_amount"),
            currency=mapping.read("Bill", record, "currency") or fields["currency"],
            issue_date=mapping.read("Bill", record, "issue_date"),
            due_date=mapping.read("Bill", record, "due_date"),
            counterparty_name=clip(vendor.get("name") or fields["counterparty_name"], 300),
            counterparty_tax_id=clip(vendor.get("tax_id"), 50),
            mapping_version=mapping.version,
        )
        balance = money(record.get("Balance"), "Bill.Balance")
        fields["status"] = self.status(record, fields["total_amount"], balance)
        return fields


class InvoicesStream(DocumentStream):
    name = "invoices"
    entity = "Invoice"
    kind = Document.Kind.CLIENT_INVOICE
    party_ref = "CustomerRef"


class CreditMemosStream(DocumentStream):
    name = "credit_memos"
    entity = "CreditMemo"
    kind = Document.Kind.CREDIT_NOTE
    party_ref = "CustomerRef"


class PurchaseOrdersStream(DocumentStream):
    name = "purchase_orders"
    entity = "PurchaseOrder"
    kind = Document.Kind.PURCHASE_ORDER
    party_ref = "VendorRef"

    def status(self, record: Mapping[str, Any], total: Decimal, balance: Decimal | None) -> str:
        # §1.6 PurchaseOrder: POStatus Open / Closed.
        return clip(record.get("POStatus") or "Open", 30).lower()


# --- purchases, attachments, payments ---------------------------------------------------------
class PurchasesStream(QueryStream):
    """Expenses paid from a bank or card account, mapped by ``mapping.py`` (§1.6 Purchase).

    ``amount`` is signed like every bank line of the hub: negative for money out, positive for a
    card refund (``Credit: true``).
    """

    name = "purchases"
    entity = "Purchase"
    model = "connectors.BankTransaction"
    dated = True

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        mapping = connector.field_mapping()
        amount = mapping.read("Purchase", record, "amount") or Decimal("0.00")
        refund = bool(record.get("Credit"))
        return {
            "bank_account_external_id": clip(lookup(record, "AccountRef"), 200),
            "amount": abs(amount) if refund else -abs(amount),
            "currency": mapping.read("Purchase", record, "currency") or "EUR",
            "side": "credit" if refund else "debit",
            "status": "completed",
            "counterparty_name": clip((record.get("EntityRef") or {}).get("name"), 300),
            "label": clip(mapping.read("Purchase", record, "label"), 500),
            "reference": clip(record.get("DocNumber"), 300),
            "operation_type": clip(record.get("PaymentType"), 40).lower(),
            "emitted_at": mapping.read("Purchase", record, "emitted_at"),
        }

    def to_row(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> Row:  # type: ignore[override]
        row = super().to_row(connector, record)
        if not is_stub(record):
            mapping = connector.field_mapping()
            # The integration page maps Purchase.Id → transaction_id: the row's natural key.
            row.external_id = clip(mapping.read("Purchase", record, "transaction_id") or row.external_id, 200)
            row.raw[VERSION_KEY] = mapping.version
        return row


class AttachmentsStream(QueryStream):
    """Files attached to QuickBooks records (§1.7 Attachable); bytes are fetched on demand."""

    name = "attachments"
    entity = "Attachable"
    model = "connectors.Attachment"
    # Inferred: Attachable is not among the entities Intuit's CDC documents (§1.5).
    cdc = False

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        refs = record.get("AttachableRef") or []
        parent = ""
        if isinstance(refs, list) and refs and isinstance(refs[0], Mapping):
            entity_ref = refs[0].get("EntityRef") or {}
            if entity_ref.get("value"):
                parent = f"{entity_ref.get('type') or ''}:{entity_ref['value']}"
        size = record.get("Size")
        return {
            "file_name": clip(record.get("FileName"), 300),
            "content_type": clip(record.get("ContentType"), 100),
            "size": int(size) if isinstance(size, int | float) and size >= 0 else None,
            "parent_external_id": clip(parent, 200),
        }

    def stub_fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        # A deleted file is detached from its record: nothing will upload it any more.
        return {"parent_external_id": ""}

    def save_related(self, connector: QuickBooksConnector, saved: list[tuple[Any, Row]]) -> None:
        """Point each bill at its file (a PDF or image; the first one attached wins)."""
        bills = Document.objects.filter(connection=connector.connection, stream=BillsStream.name)
        detached = [att.external_id for att, _ in saved if not att.parent_external_id]
        if detached:
            bills.filter(attachment_external_id__in=detached).update(attachment_external_id="")
        by_bill: dict[str, str] = {}
        for attachment, _ in saved:
            parent = attachment.parent_external_id or ""
            kind = (attachment.content_type or "").lower()
            if parent.startswith("Bill:") and (kind == "application/pdf" or kind.startswith("image/")):
                by_bill.setdefault(parent.split(":", 1)[1], attachment.external_id)
        if not by_bill:
            return
        # One UPDATE per page: bills that have no file yet take theirs.
        bills.filter(external_id__in=list(by_bill), attachment_external_id="").update(
            attachment_external_id=Case(
                *(When(external_id=bill_id, then=Value(att_id)) for bill_id, att_id in by_bill.items()),
                default=Value(""),
            )
        )


class PaymentsStream(QueryStream):
    """Customer payments (§1.6 Payment), mirrored raw."""

    name = "payments"
    entity = "Payment"
    model = "connectors.RemoteRecord"
    dated = True

    def fields(self, connector: QuickBooksConnector, record: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def stub_fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {}


STREAMS: tuple[type[Stream], ...] = (
    AccountsStream,
    VendorsStream,
    CustomersStream,
    BillsStream,
    AttachmentsStream,
    PurchasesStream,
    PurchaseOrdersStream,
    InvoicesStream,
    CreditMemosStream,
    PaymentsStream,
)

#: Webhook entity name (§1.10) → the stream that re-reads it.
STREAM_BY_ENTITY: dict[str, str] = {
    stream.entity: stream.name for stream in STREAMS if issubclass(stream, QueryStream)
}
