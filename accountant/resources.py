"""django-import-export resources: entries and the chart of accounts as CSV / XLSX.

* ``EntryLineResource`` exports one row per entry line with its entry's journal, date, piece
  number and label (the column list accountants know from Qonto's CSV/XLSX export: journal code,
  date, general account, auxiliary, piece, label, debit, credit, currency, attachment). Export only:
  entries are built by the hub, never imported.
* ``AccountResource`` exports and imports a file's chart. Imports are tenant-checked row by row:
  the row's ``client_file`` must be one the importing person may manage (a member of the file's
  firm, or an owner/accountant of its organisation); anything else is refused with a message
  naming the row. Imported accounts carry no remote id: the software creates them when an entry
  first uses them.
"""

from __future__ import annotations

from typing import Any

from import_export import fields, resources
from import_export.widgets import ForeignKeyWidget

from accountant.models import Account, ClientFile, EntryLine
from qontohub.models import FirmMembership
from qontohub.tenancy import MANAGE_ROLES, role_in


def may_manage_file(user: Any, client_file: ClientFile) -> bool:
    if user is None:
        return False
    if getattr(user, "is_superuser", False):
        return True
    if FirmMembership.objects.filter(user=user, firm_id=client_file.firm_id).exists():
        return True
    return role_in(user, client_file.organization_id, MANAGE_ROLES)


class EntryLineResource(resources.ModelResource):
    journal_code = fields.Field(attribute="entry__journal__code", column_name="journal_code")
    date = fields.Field(attribute="entry__date", column_name="date")
    piece_number = fields.Field(attribute="entry__piece_number", column_name="piece_number")
    reference = fields.Field(attribute="entry__reference", column_name="invoice_number")
    entry_label = fields.Field(attribute="entry__label", column_name="entry_label")
    account_number = fields.Field(attribute="account__number", column_name="general_account")
    account_label = fields.Field(attribute="account__label", column_name="general_account_label")
    aux_number = fields.Field(attribute="aux_account__number", column_name="auxiliary_account")
    aux_label = fields.Field(attribute="aux_account__label", column_name="auxiliary_account_label")
    line_label = fields.Field(attribute="label", column_name="label")
    debit = fields.Field(attribute="debit", column_name="debit")
    credit = fields.Field(attribute="credit", column_name="credit")
    currency = fields.Field(attribute="entry__currency", column_name="currency")
    due_date = fields.Field(attribute="entry__due_date", column_name="due_date")
    status = fields.Field(attribute="entry__status", column_name="status")
    attachment = fields.Field(column_name="attachment_file_name")

    class Meta:
        model = EntryLine
        fields = (
            "journal_code", "date", "piece_number", "reference", "entry_label", "account_number",
            "account_label", "aux_number", "aux_label", "line_label", "debit", "credit", "currency",
            "due_date", "status", "attachment",
        )
        export_order = fields

    def dehydrate_attachment(self, line: EntryLine) -> str:
        name = line.entry.supporting_file.name if line.entry.supporting_file else ""
        return name.rsplit("/", 1)[-1]


class AccountResource(resources.ModelResource):
    client_file = fields.Field(
        attribute="client_file", column_name="client_file", widget=ForeignKeyWidget(ClientFile, "pk")
    )

    def __init__(self, user: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user = user

    class Meta:
        model = Account
        fields = ("client_file", "number", "label", "kind", "enabled", "remote_id")
        import_id_fields = ("client_file", "number")
        # Remote ids come from the software only: an import never sets or changes them.
        skip_unchanged = True

    def before_import_row(self, row: Any, **kwargs: Any) -> None:
        raw = str(row.get("client_file") or "").strip()
        if not raw.isdigit():
            raise ValueError(f"client_file must be the client file's numeric id, got {raw!r}")
        client_file = ClientFile.objects.filter(pk=int(raw)).first()
        if client_file is None or not may_manage_file(self.user, client_file):
            # Same message whether it does not exist or is someone else's: nothing leaks.
            raise ValueError(f"client_file {raw}: not one of the client files you manage")
        number = str(row.get("number") or "").strip().upper()
        if not number or not number[:3].isdigit():
            raise ValueError(f"number {number!r}: an account number starts with three digits of the chart")
        row["number"] = number
        kind = str(row.get("kind") or "").strip() or Account.Kind.GENERAL
        if kind not in Account.Kind.values:
            raise ValueError(f"kind {kind!r}: use one of {', '.join(Account.Kind.values)}")
        row["kind"] = kind
        if "remote_id" in row:
            row["remote_id"] = ""

    def before_save_instance(self, instance: Account, row: Any, **kwargs: Any) -> None:
        instance.organization_id = instance.client_file.organization_id
        if instance.pk:
            # Keep the software's id of an existing account whatever the sheet says.
            instance.remote_id = Account.objects.filter(pk=instance.pk).values_list("remote_id", flat=True).first() or ""
