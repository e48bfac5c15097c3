"""A QuickBooks bill rendered as a PDF with fpdf2, its Factur-X XML embedded and read back."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import facturx
import pytest
from lxml import etree

from connectors.models import Counterparty, Document
from connectors.quickbooks.pdf import BillData, Party, TaxGroup, bill_data, factur_x_fields, render_bill_pdf
from connectors.sync import sync_connection
from tests.connectors.quickbooks.test_connector import SMALL, quickbooks_connection

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
}


def read_back(pdf: bytes) -> etree._Element:
    name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert name == "factur-x.xml"
    return etree.fromstring(xml)


def text(root: etree._Element, path: str) -> list[str]:
    return [node.text for node in root.xpath(path, namespaces=NS)]


def test_the_embedded_xml_carries_the_bill_at_basic_wl_level() -> None:
    data = BillData(
        number="SUP-2025-017",
        issue_date=date(2025, 3, 3),
        due_date=date(2025, 4, 2),
        currency="EUR",
        total=Decimal("1210.00"),
        tax=Decimal("210.00"),
        balance=Decimal("1210.00"),
        seller=Party(
            "Atelier Nordlys SARL — Belvédère", "FR", "FR40404833048", "12 rue des Tanneurs", "69002", "Lyon"
        ),
        buyer=Party("Atelier Lumière SAS"),
        tax_groups=[TaxGroup(Decimal("1000.00"), Decimal("210.00"), Decimal("21"))],
        note="Studio rent March",
    )
    pdf = render_bill_pdf(data)
    assert pdf.startswith(b"%PDF")
    root = read_back(pdf)
    assert text(root, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID") == [
        "urn:factur-x.eu:1p0:basicwl"
    ]
    assert text(root, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID") == ["SUP-2025-017"]
    assert text(root, "//ram:SellerTradeParty/ram:Name") == ["Atelier Nordlys SARL — Belvédère"]
    assert text(root, "//ram:SellerTradeParty//ram:ID[@schemeID='VA']") == ["FR40404833048"]
    assert text(root, "//ram:GrandTotalAmount") == ["1210.00"]
    assert text(root, "//ram:TaxBasisTotalAmount") == ["1000.00"]
    assert text(root, "//ram:ApplicableTradeTax/ram:CalculatedAmount") == ["210.00"]
    assert text(root, "//ram:DuePayableAmount") == ["1210.00"]


def test_a_partly_paid_bill_without_tax_lines_is_still_a_valid_factur_x() -> None:
    data = BillData(
        number="X-1",
        issue_date=date(2025, 1, 5),
        due_date=None,
        currency="USD",
        total=Decimal("123.45"),
        tax=Decimal("20.57"),
        balance=Decimal("23.45"),
        seller=Party("Cloudway Hosting Inc.", "US"),
        buyer=Party("Org"),
    )
    fields = factur_x_fields(data)
    assert fields["BT-113"] == "100.00" and fields["BT-115"] == "23.45"
    assert fields["BG-23"] == [{"BT-116": "102.88", "BT-117": "20.57", "BT-118": "S", "BT-119": "19.99"}]
    root = read_back(render_bill_pdf(data))
    assert text(root, "//ram:DuePayableAmount") == ["23.45"]


@pytest.mark.django_db
def test_a_mirrored_sandbox_bill_renders_with_its_vendor(sandbox_for: Any, org_a: Any) -> None:
    api = sandbox_for("quickbooks", 1, **SMALL)
    connection = quickbooks_connection(api, org_a)
    sync_connection(connection.pk, trigger="schedule")
    bill = Document.objects.filter(connection=connection, stream="bills").exclude(tax_amount=0).first()
    vendor = Counterparty.objects.get(
        connection=connection, stream="vendors", external_id=bill.counterparty_external_id
    )

    data = bill_data(bill, vendor, org_a.name)

    assert data.number == bill.number and data.seller.name == vendor.name and data.buyer.name == org_a.name
    assert len(data.lines) == bill.lines.count() and data.total == bill.total_amount
    root = read_back(render_bill_pdf(data))
    assert text(root, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID") == [bill.number]
    assert text(root, "//ram:GrandTotalAmount") == [f"{bill.total_amount:.2f}"]
