"""A QuickBooks bill without a file, rendered as a PDF that carries its data as Factur-X.

Qonto's supplier invoices are files (qonto-api.md §3.10: the bulk upload takes one file per
invoice and reads the data out of it). When a bill has no attachment in QuickBooks, the hub draws
one with fpdf2 and embeds the bill's data as Factur-X (the French/German e-invoice profile of
EN 16931): a CII XML built by ``facturx.generate_cii_xml`` from BT-coded fields at the BASIC WL
level (document totals and VAT breakdown, no lines; the factur-x package offers no MINIMUM level),
then attached to the PDF by ``facturx.generate_from_binary``. Qonto reports e-invoices
(``is_einvoice``, ``e_invoice_type``: zugferd, §3.10), so the structured data travels with the file.

Field sources (EN 16931 business terms):

* BT-1 number ← ``DocNumber`` (or ``QBO-<Id>`` when the bill has none), BT-2 ← ``TxnDate``,
  BT-9 ← ``DueDate``, BT-3 ``380`` (commercial invoice), BT-5 ← the currency;
* BG-4 seller ← the vendor (name, VAT number when it is one, address), BG-7 buyer ← the
  organisation;
* BG-23 VAT breakdown ← ``TxnTaxDetail.TaxLine[]`` (base, amount, percent, peer-apis.md §1.6), or
  one group computed from the totals; BT-109/110/112 ← totals; BT-113 (paid) and BT-115 (due)
  ← ``TotalAmt`` and ``Balance``.

The PDF uses fpdf2's core Helvetica, which only has Latin-1 glyphs: other characters are folded
(accents kept where Latin-1 has them) so that rendering never fails on a vendor's name.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.models import Counterparty, Document

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")
LEVEL = "basicwl"
#: UNTDID 1001: 380 = commercial invoice.
INVOICE_TYPE = "380"


@dataclass(frozen=True)
class Party:
    name: str
    country: str = "FR"
    vat_number: str = ""
    address: str = ""
    postcode: str = ""
    city: str = ""


@dataclass(frozen=True)
class TaxGroup:
    base: Decimal
    amount: Decimal
    rate: Decimal


@dataclass(frozen=True)
class Line:
    description: str
    amount: Decimal
    quantity: Decimal = Decimal("1")
    unit_price: Decimal | None = None
    account: str = ""


@dataclass(frozen=True)
class BillData:
    """What a rendered bill shows and what its Factur-X XML says."""

    number: str
    issue_date: date
    due_date: date | None
    currency: str
    total: Decimal
    tax: Decimal
    balance: Decimal
    seller: Party
    buyer: Party
    lines: Sequence[Line] = ()
    tax_groups: Sequence[TaxGroup] = ()
    note: str = ""
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def net(self) -> Decimal:
        return (self.total - self.tax).quantize(CENT)


def _dec(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value))
    except ArithmeticError:
        return None


def bill_data(
    bill: Document, vendor: Counterparty | None, buyer_name: str, buyer_country: str = "FR"
) -> BillData:
    """The data of a mirrored QuickBooks bill (its promoted columns, lines and raw payload)."""
    raw = bill.raw or {}
    total = (bill.total_amount or Decimal("0")).quantize(CENT)
    tax = (bill.tax_amount or Decimal("0")).quantize(CENT)
    balance = _dec(raw.get("Balance"))
    groups: list[TaxGroup] = []
    for tax_line in (raw.get("TxnTaxDetail") or {}).get("TaxLine") or []:
        detail = tax_line.get("TaxLineDetail") or {}
        base, amount, rate = (
            _dec(detail.get("NetAmountTaxable")),
            _dec(tax_line.get("Amount")),
            _dec(detail.get("TaxPercent")),
        )
        if base is not None and amount is not None and rate is not None:
            groups.append(TaxGroup(base.quantize(CENT), amount.quantize(CENT), rate))
    address = raw.get("VendorAddr") or (vendor.raw.get("BillAddr") if vendor is not None else None) or {}
    seller = Party(
        name=(vendor.name if vendor is not None and vendor.name else bill.counterparty_name)
        or "Unknown supplier",
        country=((vendor.country if vendor is not None else "") or str(address.get("Country") or "") or "FR")[
            :2
        ].upper(),
        vat_number=(vendor.vat_number if vendor is not None else "") or "",
        address=str(address.get("Line1") or ""),
        postcode=str(address.get("PostalCode") or ""),
        city=str(address.get("City") or ""),
    )
    lines = [
        Line(
            description=line.description or "Expense",
            amount=line.amount,
            quantity=line.quantity,
            unit_price=line.unit_price,
            account=line.account_code,
        )
        for line in bill.lines.all()
    ]
    realm = (bill.connection.options or {}).get("realmId", "") if bill.connection_id else ""
    return BillData(
        number=bill.number or f"QBO-{bill.external_id}",
        issue_date=bill.issue_date or bill.synced_at.date(),
        due_date=bill.due_date,
        currency=bill.currency or "EUR",
        total=total,
        tax=tax,
        balance=(balance if balance is not None else total).quantize(CENT),
        seller=seller,
        buyer=Party(name=buyer_name, country=buyer_country),
        lines=lines,
        tax_groups=groups,
        note=str(raw.get("PrivateNote") or ""),
        source=f"QuickBooks company {realm}, bill {bill.external_id}".strip(),
    )


# --- Factur-X -------------------------------------------------------------------------------------
def _amount(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _party(party: Party) -> dict[str, Any]:
    data: dict[str, Any] = {"name": party.name[:200], "country_code": party.country or "FR"}
    if party.vat_number:
        data["vat_identifier"] = party.vat_number
    if party.address:
        data["addr_l1"] = party.address[:100]
    if party.postcode:
        data["postcode"] = party.postcode[:20]
    if party.city:
        data["city"] = party.city[:60]
    return data


def _vat_breakdown(data: BillData) -> list[dict[str, str]]:
    """BG-23 groups whose bases add up to BT-109 and whose amounts add up to BT-110.

    The TaxLine groups are used when they are consistent with the totals (EN 16931 BR-CO-14);
    otherwise one group is derived from the totals, with the rate rounded to two decimals.
    """
    net, tax = data.net, data.tax
    groups = list(data.tax_groups)
    if groups and sum(g.amount for g in groups) == tax and sum(g.base for g in groups) <= net:
        rows = [
            {
                "BT-116": _amount(g.base),
                "BT-117": _amount(g.amount),
                "BT-118": "S" if g.amount else "Z",
                "BT-119": _amount(g.rate),
            }
            for g in groups
        ]
        rest = net - sum(g.base for g in groups)
        if rest > 0:
            rows.append({"BT-116": _amount(rest), "BT-117": "0.00", "BT-118": "Z", "BT-119": "0.00"})
        return rows
    if tax and net:
        rate = (tax / net * 100).quantize(CENT, rounding=ROUND_HALF_UP)
        return [{"BT-116": _amount(net), "BT-117": _amount(tax), "BT-118": "S", "BT-119": _amount(rate)}]
    # No VAT on the bill: zero rated ("Z").
    return [{"BT-116": _amount(net), "BT-117": "0.00", "BT-118": "Z", "BT-119": "0.00"}]


def factur_x_fields(data: BillData) -> dict[str, Any]:
    """The BT-coded dictionary ``facturx.generate_cii_xml`` takes."""
    paid = max(data.total - data.balance, Decimal("0"))
    fields: dict[str, Any] = {
        "BT-1": data.number[:100],
        "BT-2": data.issue_date,
        "BT-3": INVOICE_TYPE,
        "BT-5": data.currency,
        # BT-72 (delivery date) fills ApplicableHeaderTradeDelivery, which the schema needs non-empty.
        "BT-72": data.issue_date,
        "BG-4": _party(data.seller),
        "BG-7": _party(data.buyer),
        "BG-23": _vat_breakdown(data),
        "BT-106": _amount(data.net),
        "BT-109": _amount(data.net),
        "BT-110": _amount(data.tax),
        "BT-112": _amount(data.total),
        "BT-115": _amount(data.total - paid),
    }
    if paid:
        fields["BT-113"] = _amount(paid)
    if data.due_date:
        fields["BT-9"] = data.due_date
    if data.note:
        fields["BG-1"] = [{"BT-22": data.note[:500]}]
    return fields


def factur_x_xml(data: BillData) -> bytes:
    """The CII XML, checked against the Factur-X XSD.

    The EN 16931 schematron is not run: the factur-x package runs it through an external Saxon
    server, and the hub makes no network call to render a file.
    """
    import facturx  # lxml, fontTools: imported when a PDF is drawn, not by every process start-up

    return facturx.generate_cii_xml(factur_x_fields(data), level=LEVEL, check_schematron=False)


# --- PDF ------------------------------------------------------------------------------------------
def latin1(text: Any) -> str:
    """``text`` with what Helvetica (Latin-1) cannot draw folded to the nearest ASCII."""
    value = str(text or "")
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        out = []
        for char in value:
            try:
                char.encode("latin-1")
                out.append(char)
            except UnicodeEncodeError:
                folded = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
                out.append(
                    folded or {"\u2014": "-", "\u2013": "-", "\u20ac": "EUR", "\u2019": "'"}.get(char, "?")
                )
        return "".join(out)


def _money(value: Decimal | None, currency: str) -> str:
    if value is None:
        return ""
    return f"{value.quantize(CENT):,.2f} {currency}".replace(",", " ")


def draw(data: BillData) -> bytes:
    """A one-page (or longer) A4 rendering of the bill with fpdf2."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(latin1(f"Invoice {data.number}"))
    pdf.set_author(latin1(data.seller.name))
    pdf.set_creator("QontoHub")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    width = pdf.epw
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(width, 9, latin1(f"Invoice {data.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 9)
    pdf.cell(
        width,
        5,
        latin1(f"Supplier invoice recorded in QuickBooks ({data.source})"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)

    def block(title: str, party: Party) -> list[str]:
        rows = [title, party.name]
        if party.address:
            rows.append(party.address)
        place = " ".join(p for p in (party.postcode, party.city) if p)
        if place or party.country:
            rows.append(", ".join(p for p in (place, party.country) if p))
        if party.vat_number:
            rows.append(f"VAT {party.vat_number}")
        return rows

    top = pdf.get_y()
    for column, rows in enumerate((block("From", data.seller), block("To", data.buyer))):
        pdf.set_xy(pdf.l_margin + column * width / 2, top)
        for number, row in enumerate(rows):
            pdf.set_font("helvetica", "B" if number < 2 else "", 10)
            pdf.cell(width / 2, 5, latin1(row), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, top + 32)
    pdf.set_font("helvetica", "", 10)
    for label, value in (
        ("Issue date", data.issue_date.isoformat()),
        ("Due date", data.due_date.isoformat() if data.due_date else "-"),
        ("Currency", data.currency),
    ):
        pdf.cell(35, 6, label)
        pdf.cell(width - 35, 6, latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    pdf.set_font("helvetica", "B", 10)
    pdf.set_fill_color(235, 235, 235)
    pdf.cell(width - 95, 7, "Description", fill=True)
    pdf.cell(25, 7, "Qty", align="R", fill=True)
    pdf.cell(35, 7, "Unit price", align="R", fill=True)
    pdf.cell(35, 7, "Amount", align="R", fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 10)
    for line in data.lines or [Line(description="Total", amount=data.net)]:
        pdf.cell(width - 95, 6, latin1(line.description)[:70])
        pdf.cell(25, 6, f"{line.quantity.normalize():f}", align="R")
        pdf.cell(35, 6, _money(line.unit_price, data.currency), align="R")
        pdf.cell(35, 6, _money(line.amount, data.currency), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for label, value, bold in (
        ("Total excluding VAT", data.net, False),
        ("VAT", data.tax, False),
        ("Total", data.total, True),
        ("Amount due", data.balance, True),
    ):
        pdf.set_font("helvetica", "B" if bold else "", 10)
        pdf.cell(width - 35, 6, label, align="R")
        pdf.cell(35, 6, _money(value, data.currency), align="R", new_x="LMARGIN", new_y="NEXT")
    if data.note:
        pdf.ln(4)
        pdf.set_font("helvetica", "I", 9)
        pdf.multi_cell(width, 5, latin1(data.note))
    pdf.ln(6)
    pdf.set_font("helvetica", "", 8)
    pdf.multi_cell(
        width,
        4,
        "Rendered by QontoHub because the bill had no file in QuickBooks. The invoice data is embedded "
        "as Factur-X (BASIC WL, factur-x.xml).",
    )
    return bytes(pdf.output())


def render_bill_pdf(data: BillData) -> bytes:
    """The PDF with its Factur-X XML embedded (``factur-x.xml``, relationship Data)."""
    import facturx

    xml = factur_x_xml(data)
    return facturx.generate_from_binary(
        draw(data),
        xml,
        flavor="factur-x",
        level=LEVEL,
        check_xsd=False,  # checked when the XML was generated
        pdf_metadata={
            "author": latin1(data.seller.name),
            "keywords": "Factur-X, QuickBooks, QontoHub",
            "title": latin1(f"{data.seller.name}: invoice {data.number}"),
            "subject": latin1(f"Invoice {data.number} dated {data.issue_date.isoformat()}"),
        },
        lang="en-GB",
    )
