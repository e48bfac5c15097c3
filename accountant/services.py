"""The accountant hub's rules: association, reference data, entries, checks, pushes.

Views, admin actions, tasks and commands call one function here each (house rule 2).

* **Connection and association.** A firm connects its accounting software once
  (``connect_software``: a firm-owned ``Connection``). ``ensure_client_files`` gives every client
  organisation of the firm a ``ClientFile``; ``suggest_pairs`` proposes which software company
  backs which file (SIREN first, then name similarity with rapidfuzz, ties refused);
  ``associate`` records a pair, ``activate`` pulls the reference data and starts pushes,
  ``disable`` stops them and keeps everything already built or pushed.
* **Reference data.** ``refresh_reference_data`` upserts accounts (general and 401/411
  auxiliaries), journals and fiscal years; new remote accounts appear at once.
* **Entries.** ``build_entries`` turns validated Qonto documents and settled transactions of the
  mirror into balanced entries with their supporting document; ``save_entry`` is the only writer
  of lines (balance checked here, then by the database: see ``accountant/models.py``);
  ``check_rules`` stores the target software's objections on the entry and blocks it.
* **Pushes.** ``push_entry`` goes through the connectors' outbox (a ``Push`` row with a unique
  idempotency key; the connector also looks for the piece number in the software before
  creating); ``settle_entry`` copies the push's outcome back onto the entry and its file.
  Frequencies: *realtime* pushes as soon as an entry is validated, *daily* waits for the
  evening job (``accountant.tasks``), *manual* only for the button (``push_pending``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from itertools import chain
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from rapidfuzz import fuzz

from accountant import rules as rulebook
from accountant.models import (
    Account,
    ClientFile,
    EntryLine,
    FiscalYear,
    Journal,
    JournalEntry,
)
from connectors import outbox
from connectors.base import AuthExpired, AuthRevoked, ConnectorError
from connectors.models import Attachment, BankTransaction, Connection, Document, Push
from connectors.outbox import send_push
from qontohub.models import Firm, FirmMembership, Organization
from qontohub.tenancy import is_support

logger = logging.getLogger(__name__)

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
DEFAULT_SOFTWARE = "pennylane"

#: Name similarity (rapidfuzz token_set_ratio on normalised names) from which a pair is proposed;
#: 85 follows the auto band of the matcher and ERPNext's cut-off of 80 with ties refused.
NAME_MATCH_THRESHOLD = 85.0

#: Qonto statuses meaning "this document is approved" (client invoices: unpaid/paid, supplier
#: invoices: anything past approval). Drafts, documents under review and cancelled ones never
#: become entries.
VALIDATED_DOCUMENT_STATUSES = frozenset(
    {"unpaid", "paid", "awaiting_payment", "to_pay", "scheduled", "pending", "validated", "approved"}
)
SETTLED_TRANSACTION_STATUSES = frozenset({"completed"})

# The PCG accounts the flows use (anchors.md §4.5); the file's own accounts are preferred when
# the chart has one with the same prefix.
SUPPLIERS = ("401", "Fournisseurs")
CUSTOMERS = ("411", "Clients")
EMPLOYEES = ("421", "Personnel - Rémunérations dues")
DEDUCTIBLE_VAT = ("44566", "TVA déductible sur autres biens et services")
COLLECTED_VAT = ("44571", "TVA collectée")
SUSPENSE = ("471", "Compte d'attente")
BANK = ("512", "Banque")
PURCHASES = ("606", "Achats non stockés de matières et fournitures")
TRAVEL = ("625", "Déplacements, missions et réceptions")
BANK_FEES = ("627", "Services bancaires et assimilés")
SERVICES_SOLD = ("706", "Prestations de services")

# Journal kinds the software's types map to; unknown types are guessed from the code.
JOURNAL_TYPES = {
    "purchase": Journal.Kind.PURCHASE,
    "purchases": Journal.Kind.PURCHASE,
    "sale": Journal.Kind.SALE,
    "sales": Journal.Kind.SALE,
    "bank": Journal.Kind.BANK,
    "expense_report": Journal.Kind.EXPENSE_REPORT,
}
JOURNAL_CODES = {
    Journal.Kind.PURCHASE: ("ACH", "HA", "AC"),
    Journal.Kind.SALE: ("VT", "VE", "VTE"),
    Journal.Kind.BANK: ("BQ1", "BQ", "BNK"),
    Journal.Kind.EXPENSE_REPORT: ("NDF", "NF"),
    Journal.Kind.MISC: ("OD",),
}
DEFAULT_JOURNALS = {
    Journal.Kind.PURCHASE: ("ACH", "Achats"),
    Journal.Kind.SALE: ("VT", "Ventes"),
    Journal.Kind.BANK: ("BQ", "Banque"),
    Journal.Kind.EXPENSE_REPORT: ("ACH", "Achats"),
    Journal.Kind.MISC: ("OD", "Opérations diverses"),
}
PIECE_PREFIX = {
    JournalEntry.Kind.PURCHASE: "ACH",
    JournalEntry.Kind.SALE: "VTE",
    JournalEntry.Kind.EXPENSE_REPORT: "NDF",
    JournalEntry.Kind.BANK: "BQ",
}
ENTRY_SOURCE = "accountant.JournalEntry"


class AccountantError(Exception):
    """Something a person can fix; ``str()`` says what to do."""


class UnbalancedEntry(AccountantError, ValueError):
    """Lines whose debits and credits differ, or a line that is not one positive side."""


# --- access -----------------------------------------------------------------------------------
def firms_of(user: Any) -> QuerySet[Firm]:
    if getattr(user, "is_superuser", False):
        return Firm.objects.all()
    if not getattr(user, "is_authenticated", False) or is_support(user):
        return Firm.objects.none()
    return Firm.objects.filter(memberships__user=user).distinct()


def require_firm_member(user: Any, firm: Firm | int) -> None:
    """Firm members (and operators) manage the firm's client files and software connection."""
    firm_id = firm if isinstance(firm, int) else firm.pk
    if getattr(user, "is_superuser", False):
        return
    if is_support(user) or not FirmMembership.objects.filter(user=user, firm_id=firm_id).exists():
        raise PermissionDenied("Only a member of the firm may change its client files.")


def client_files_for(user: Any) -> QuerySet[ClientFile]:
    """Client files ``user`` may see: their firm's, or their own organisation's."""
    return ClientFile.objects.visible_to(user).select_related("organization", "firm", "connection")


# --- the firm's software connection -----------------------------------------------------------
def firm_connection(firm: Firm, software: str = DEFAULT_SOFTWARE) -> Connection | None:
    return (
        Connection.objects.filter(firm=firm, organization__isnull=True, provider=software)
        .order_by("-status", "-pk")
        .first()
    )


def connect_software(firm: Firm, user: Any, api_token: str, software: str = DEFAULT_SOFTWARE) -> Connection:
    """Create or update the firm's connection with an API token, after checking it with the software."""
    from connectors.registry import connector_class

    require_firm_member(user, firm)
    token = (api_token or "").strip()
    if not token:
        raise AccountantError("Paste the firm API token generated in the software (Firm settings > Firm Tokens).")
    cls = connector_class(software)
    probe = Connection(firm=firm, provider=software, auth_method=Connection.AuthMethod.API_KEY,
                       credentials={"api_key": token})
    try:
        external_id, display_name = probe.connector().identify()
    except (AuthRevoked, AuthExpired) as exc:
        raise AccountantError(f"{cls.name} refused this token: {exc.message}") from exc
    except ConnectorError as exc:
        raise AccountantError(f"The token could not be checked with {cls.name} ({exc.message}); try again later.") from exc
    with transaction.atomic():
        connection = firm_connection(firm, software)
        if connection is None:
            connection = Connection(firm=firm, provider=software, created_by=user)
        connection.auth_method = Connection.AuthMethod.API_KEY
        connection.credentials = {"api_key": token}
        connection.set_active(external_id, display_name)
        connection.save()
        ClientFile.objects.filter(firm=firm, connection__isnull=True).update(connection=connection)
    return connection


# --- client files and association -------------------------------------------------------------
def ensure_client_files(firm: Firm, software: str = DEFAULT_SOFTWARE) -> list[ClientFile]:
    """One client file per client organisation of the firm (created inactive); all of them."""
    connection = firm_connection(firm, software)
    for organization in Organization.objects.filter(firm=firm):
        ClientFile.objects.get_or_create(
            organization=organization,
            defaults={"firm": firm, "connection": connection, "software": software},
        )
    # A file whose organisation left the firm is not this firm's any more: it is not listed.
    return list(
        ClientFile.objects.filter(firm=firm, organization__firm=firm)
        .select_related("organization", "connection")
        .order_by("organization__name")
    )


def remote_companies(firm: Firm, software: str = DEFAULT_SOFTWARE) -> list[Any]:
    connection = firm_connection(firm, software)
    if connection is None or connection.status != Connection.Status.ACTIVE:
        raise AccountantError("Connect the firm's accounting software first (edit API connection).")
    try:
        return list(connection.connector().list_companies())
    except ConnectorError as exc:
        if exc.permanent:
            connection.mark_needs_attention(str(exc))
        raise AccountantError(f"The software's company list could not be read: {exc}") from exc


_LEGAL_FORMS = frozenset(
    "sa sas sasu sarl eurl sci snc scop selarl selas scp sca gie ei eirl ste societe cie et fils".split()
)


def normalise_name(name: str) -> str:
    """Lower-case, accents folded, punctuation dropped, legal forms (SAS, SARL…) removed."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode().lower()
    # "S.A.S." → "sas" before punctuation becomes a separator.
    text = re.sub(r"\b(?:[a-z]\.){2,}", lambda m: m.group(0).replace(".", ""), text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(token for token in text.split() if token not in _LEGAL_FORMS)


@dataclass(frozen=True)
class Pair:
    client_file: ClientFile
    company: Any
    reason: str  # "current", "siren" or "name"
    score: float


def suggest_pairs(firm: Firm, companies: Sequence[Any] | None = None) -> list[Pair]:
    """Proposed (client file, software company) pairs: current ones, then SIREN, then name.

    Each file and each company appears at most once. Name pairs need a similarity of at least
    ``NAME_MATCH_THRESHOLD`` and a unique best candidate: a tie is left for the person to decide.
    """
    files = ensure_client_files(firm)
    if companies is None:
        companies = remote_companies(firm)
    by_id = {str(c.id): c for c in companies}
    pairs: list[Pair] = []
    taken_files: set[int] = set()
    taken_companies: set[str] = set()

    for client_file in files:
        company = by_id.get(client_file.remote_company_id)
        if company is not None:
            pairs.append(Pair(client_file, company, "current", 100.0))
            taken_files.add(client_file.pk)
            taken_companies.add(company.id)

    by_siren: dict[str, list[Any]] = {}
    for company in companies:
        if company.siren:
            by_siren.setdefault(company.siren, []).append(company)
    for client_file in files:
        siren = (client_file.organization.siren or "").replace(" ", "")
        if client_file.pk in taken_files or not siren:
            continue
        candidates = [c for c in by_siren.get(siren, []) if c.id not in taken_companies]
        if len(candidates) == 1:
            pairs.append(Pair(client_file, candidates[0], "siren", 100.0))
            taken_files.add(client_file.pk)
            taken_companies.add(candidates[0].id)

    scored: list[tuple[float, int, str]] = []
    for client_file in files:
        if client_file.pk in taken_files:
            continue
        ours = normalise_name(client_file.organization.name)
        if not ours:
            continue
        ranked = sorted(
            (
                (max(fuzz.token_set_ratio(ours, normalise_name(name)) for name in (c.name, c.trade_name) if name), c.id)
                for c in companies
                if c.id not in taken_companies and (c.name or c.trade_name)
            ),
            reverse=True,
        )
        if not ranked or ranked[0][0] < NAME_MATCH_THRESHOLD:
            continue
        if len(ranked) > 1 and ranked[1][0] == ranked[0][0]:
            continue  # two companies look equally right: the person decides
        scored.append((ranked[0][0], client_file.pk, ranked[0][1]))
    files_by_pk = {f.pk: f for f in files}
    for score, file_pk, company_id in sorted(scored, reverse=True):
        if file_pk in taken_files or company_id in taken_companies:
            continue
        pairs.append(Pair(files_by_pk[file_pk], by_id[company_id], "name", float(score)))
        taken_files.add(file_pk)
        taken_companies.add(company_id)
    return pairs


def associate(client_file: ClientFile, remote_company: Any, user: Any = None) -> ClientFile:
    """Tie ``client_file`` to a company of the firm's software (stays inactive until ``activate``)."""
    if user is not None:
        require_firm_member(user, client_file.firm_id)
    if client_file.organization.firm_id != client_file.firm_id:
        raise AccountantError("This organisation is no longer a client of the firm.")
    company_id = str(remote_company.id)
    if client_file.remote_company_id and client_file.remote_company_id != company_id:
        if client_file.status == ClientFile.Status.ACTIVE:
            raise AccountantError(
                f"{client_file.organization} is active with {client_file.remote_company_name}: "
                "disable the integration before associating another company."
            )
    connection = firm_connection(client_file.firm, client_file.software)
    if connection is None:
        raise AccountantError("Connect the firm's accounting software first (edit API connection).")
    clash = (
        ClientFile.objects.filter(connection=connection, remote_company_id=company_id)
        .exclude(pk=client_file.pk)
        .select_related("organization")
        .first()
    )
    if clash is not None:
        raise AccountantError(f"{remote_company.name} is already associated with {clash.organization}.")
    client_file.connection = connection
    client_file.remote_company_id = company_id
    client_file.remote_company_name = str(remote_company.name)[:300]
    client_file.remote_siren = str(getattr(remote_company, "siren", "") or "")[:20]
    client_file.remote_client_code = str(getattr(remote_company, "client_code", "") or "")[:100]
    client_file.associated_at = timezone.now()
    client_file.save()
    return client_file


def activate(client_file: ClientFile, user: Any = None) -> ClientFile:
    """Pull the file's reference data and start pushing; ERROR with the reason if it cannot."""
    if user is not None:
        require_firm_member(user, client_file.firm_id)
    if not client_file.is_associated:
        raise AccountantError(f"Associate {client_file.organization} with a company of the software first.")
    connection = client_file.connection
    if connection is None or connection.status != Connection.Status.ACTIVE:
        raise AccountantError("The firm's software connection is not active: edit the API connection.")
    try:
        refresh_reference_data(client_file)
    except AccountantError as exc:
        record_error(client_file, str(exc), status=ClientFile.Status.ERROR)
        raise
    now = timezone.now()
    client_file.status = ClientFile.Status.ACTIVE
    client_file.activated_at = now
    client_file.disabled_at = None
    client_file.last_error = ""
    client_file.last_error_at = None
    client_file.save(update_fields=["status", "activated_at", "disabled_at", "last_error", "last_error_at", "updated_at"])
    return client_file


def disable(client_file: ClientFile, user: Any = None) -> ClientFile:
    """Stop pushing: queued pushes are cancelled; entries, pushes already made and exports stay."""
    if user is not None:
        require_firm_member(user, client_file.firm_id)
    with transaction.atomic():
        client_file.status = ClientFile.Status.INACTIVE
        client_file.disabled_at = timezone.now()
        client_file.save(update_fields=["status", "disabled_at", "updated_at"])
        entry_ids = [str(pk) for pk in JournalEntry.objects.filter(client_file=client_file).values_list("pk", flat=True)]
        Push.objects.filter(
            source_type=ENTRY_SOURCE,
            source_id__in=entry_ids,
            status__in=[Push.Status.PENDING, Push.Status.FAILED],
        ).update(status=Push.Status.CANCELLED, last_error="Cancelled: the integration was disabled.")
    return client_file


def set_frequency(client_file: ClientFile, frequency: str, user: Any = None) -> ClientFile:
    if user is not None:
        require_firm_member(user, client_file.firm_id)
    if frequency not in ClientFile.Frequency.values:
        raise AccountantError(f"Unknown frequency {frequency!r}.")
    client_file.sync_frequency = frequency
    client_file.save(update_fields=["sync_frequency", "updated_at"])
    return client_file


def record_error(client_file: ClientFile, message: str, *, status: str | None = None) -> None:
    client_file.last_error = message[:5000]
    client_file.last_error_at = timezone.now()
    fields = ["last_error", "last_error_at", "updated_at"]
    if status is not None:
        client_file.status = status
        fields.append("status")
    client_file.save(update_fields=fields)


# --- reference data ---------------------------------------------------------------------------
@dataclass
class RefreshReport:
    accounts_created: int = 0
    accounts_updated: int = 0
    journals: int = 0
    fiscal_years: int = 0
    new_account_numbers: list[str] = field(default_factory=list)


def refresh_reference_data(client_file: ClientFile) -> RefreshReport:
    """Pull the file's chart (general + auxiliaries), journals and fiscal years from the software."""
    if not client_file.is_associated or client_file.connection is None:
        raise AccountantError("The client file is not associated with a company of the software.")
    connector = client_file.connection.connector()
    company_id = client_file.remote_company_id
    try:
        accounts = connector.list_ledger_accounts(company_id)
        journals = connector.list_journals(company_id)
        years = connector.list_fiscal_years(company_id)
    except ConnectorError as exc:
        if exc.permanent and isinstance(exc, AuthRevoked):
            client_file.connection.mark_needs_attention(str(exc))
        raise AccountantError(f"The accounting data could not be read from the software: {exc}") from exc

    report = RefreshReport()
    with transaction.atomic():
        existing = {a.number: a for a in Account.objects.filter(client_file=client_file)}
        by_remote = {a.remote_id: a for a in existing.values() if a.remote_id}
        new_accounts: list[Account] = []
        for remote in accounts:
            account = by_remote.get(remote.id) or existing.get(remote.number)
            kind = remote.kind if remote.kind in Account.Kind.values else Account.Kind.GENERAL
            if kind == Account.Kind.GENERAL:
                kind = _aux_kind_from_number(remote.number) or kind
            values = {"number": remote.number, "label": remote.label[:300], "kind": kind,
                      "enabled": remote.enabled, "remote_id": remote.id, "raw": dict(remote.raw)}
            if account is None:
                # A first pull brings the whole chart (thousands of accounts): one insert for all.
                new_accounts.append(Account(client_file=client_file, organization_id=client_file.organization_id,
                                            **values))
                report.accounts_created += 1
                report.new_account_numbers.append(remote.number)
            elif any(getattr(account, k) != v for k, v in values.items()):
                for key, value in values.items():
                    setattr(account, key, value)
                account.save()
                report.accounts_updated += 1
        Account.objects.bulk_create(new_accounts, batch_size=500)
        journal_rows = {j.code: j for j in Journal.objects.filter(client_file=client_file)}
        journal_by_remote = {j.remote_id: j for j in journal_rows.values() if j.remote_id}
        for remote in journals:
            journal = journal_by_remote.get(remote.id) or journal_rows.get(remote.code)
            values = {"code": remote.code[:10], "label": remote.label[:200], "remote_id": remote.id,
                      "kind": _journal_kind(remote.type, remote.code), "raw": dict(remote.raw)}
            if journal is None:
                Journal.objects.create(client_file=client_file, organization_id=client_file.organization_id, **values)
            else:
                for key, value in values.items():
                    setattr(journal, key, value)
                journal.save()
            report.journals += 1
        for remote in years:
            status = FiscalYear.Status.CLOSED if remote.status in ("closed", "frozen") else FiscalYear.Status.OPEN
            FiscalYear.objects.update_or_create(
                client_file=client_file,
                start=remote.start,
                defaults={"end": remote.finish, "status": status, "remote_id": remote.id,
                          "remote_status": remote.status, "organization_id": client_file.organization_id},
            )
            report.fiscal_years += 1
        client_file.reference_synced_at = timezone.now()
        client_file.save(update_fields=["reference_synced_at", "updated_at"])
    return report


def _aux_kind_from_number(number: str) -> str | None:
    """A 401/411 number with letters after the class (401EDF) is a third party's account."""
    for prefix, kind in (("401", Account.Kind.SUPPLIER), ("411", Account.Kind.CUSTOMER)):
        if number.startswith(prefix) and re.search(r"[A-Za-z]", number[len(prefix):]):
            return kind
    return None


def _journal_kind(remote_type: str, code: str) -> str:
    kind = JOURNAL_TYPES.get((remote_type or "").lower())
    if kind:
        return kind
    for candidate, codes in JOURNAL_CODES.items():
        if code.upper() in codes:
            return candidate
    return Journal.Kind.MISC


# --- entries: the one writer of lines ---------------------------------------------------------
@dataclass(frozen=True)
class LineSpec:
    account: Account
    debit: Decimal = ZERO
    credit: Decimal = ZERO
    label: str = ""
    aux_account: Account | None = None


def check_lines(lines: Sequence[LineSpec]) -> tuple[Decimal, Decimal]:
    """Debit and credit totals of balanced, well-formed lines; ``UnbalancedEntry`` otherwise."""
    if len(lines) < 2:
        raise UnbalancedEntry("An entry needs at least two lines.")
    debit = credit = ZERO
    for position, line in enumerate(lines, start=1):
        line_debit = Decimal(line.debit).quantize(CENT)
        line_credit = Decimal(line.credit).quantize(CENT)
        if line_debit < 0 or line_credit < 0 or (line_debit > 0) == (line_credit > 0):
            raise UnbalancedEntry(f"Line {position} must carry either a debit or a credit, positive.")
        debit += line_debit
        credit += line_credit
    if debit != credit:
        raise UnbalancedEntry(f"Debits ({debit}) and credits ({credit}) differ by {abs(debit - credit)}.")
    return debit, credit


def save_entry(
    client_file: ClientFile,
    lines: Sequence[LineSpec],
    *,
    entry: JournalEntry | None = None,
    **fields: Any,
) -> JournalEntry:
    """Create (or rewrite) an entry and its lines in one transaction, balanced or not at all."""
    debit, credit = check_lines(lines)
    for line in lines:
        for account in (line.account, line.aux_account):
            if account is not None and account.client_file_id != client_file.pk:
                raise AccountantError(f"Account {account.number} belongs to another client file.")
    with transaction.atomic():
        if entry is None:
            entry = JournalEntry(client_file=client_file, organization_id=client_file.organization_id)
        elif entry.status == JournalEntry.Status.PUSHED:
            raise AccountantError("A pushed entry cannot be changed here; correct it in the software.")
        for key, value in fields.items():
            setattr(entry, key, value)
        entry.total_debit, entry.total_credit = debit, credit
        entry.save()
        EntryLine.objects.filter(entry=entry).delete()
        EntryLine.objects.bulk_create(
            EntryLine(
                entry=entry,
                position=position,
                account=line.account,
                aux_account=line.aux_account,
                label=line.label[:500],
                debit=Decimal(line.debit).quantize(CENT),
                credit=Decimal(line.credit).quantize(CENT),
            )
            for position, line in enumerate(lines)
        )
    return entry


# --- accounts and journals used by the builder ------------------------------------------------
class _Chart:
    """A client file's chart of accounts, read once for a build and kept current as the build
    adds accounts to it (a build used to read it again for every document and transaction, and
    the whole supplier or customer ledger for every third party)."""

    def __init__(self, client_file: ClientFile) -> None:
        self.client_file = client_file
        self.accounts = list(Account.objects.filter(client_file=client_file))
        self.by_number = {a.number: a for a in self.accounts}
        self._general: dict[str, Account] = {}
        self._journals: dict[str, Journal] = {}
        self._names: dict[int, str] = {}

    def _add(self, account: Account) -> Account:
        if account.number not in self.by_number:
            self.accounts.append(account)
            self.by_number[account.number] = account
        return account

    def general(self, spec: tuple[str, str]) -> Account:
        """The general account for a PCG prefix: exact, else the smallest number with that
        prefix, else a new local one (``prefix`` padded to 6 digits; pushed ones are created remotely)."""
        prefix, label = spec
        found = self._general.get(prefix)
        if found is None:
            usable = [a for a in self.accounts if a.kind == Account.Kind.GENERAL and a.enabled]
            found = next((a for a in usable if a.number == prefix), None) or min(
                (a for a in usable if a.number.startswith(prefix) and a.number.isdigit()),
                key=lambda a: (len(a.number), a.number),
                default=None,
            )
            if found is None:
                found, _ = Account.objects.get_or_create(
                    client_file=self.client_file,
                    number=prefix.ljust(6, "0"),
                    defaults={"label": label, "kind": Account.Kind.GENERAL,
                              "organization_id": self.client_file.organization_id},
                )
                self._add(found)
            self._general[prefix] = found
        return found

    def numbered(self, number: str, label: str) -> Account:
        """The account with this exact number (any kind), else the general one for it as a prefix."""
        return self.by_number.get(number) or self.general((number, label))

    def _name(self, account: Account) -> str:
        name = self._names.get(id(account))
        if name is None:
            name = self._names[id(account)] = normalise_name(account.label)
        return name

    def known_third_party(self, kind: str, name: str) -> Account | None:
        ours = normalise_name(name)
        if not ours:
            return None
        return next((a for a in self.accounts if a.kind == kind and self._name(a) == ours), None)

    def third_party(self, kind: str, name: str) -> Account:
        """The supplier or customer auxiliary for ``name``: the chart's if one matches, else a new one.

        Matching is by normalised label (exact first, then token-set similarity ≥ 92 with a
        unique best). A new auxiliary is numbered ``401``/``411`` + a code from the name; the
        push creates it in the software (which creates the third party with it).
        """
        ours = normalise_name(name)
        pool = [a for a in self.accounts if a.kind == kind]
        if ours:
            for account in pool:
                if self._name(account) == ours:
                    return account
            ranked = sorted(((fuzz.token_set_ratio(ours, self._name(a)), i) for i, a in enumerate(pool)),
                            key=lambda r: (-r[0], -pool[r[1]].pk))
            if ranked and ranked[0][0] >= 92 and (len(ranked) == 1 or ranked[1][0] < ranked[0][0]):
                return pool[ranked[0][1]]
        prefix = SUPPLIERS[0] if kind == Account.Kind.SUPPLIER else CUSTOMERS[0]
        base = prefix + _third_party_code(name)
        number, suffix = base, 1
        while number in self.by_number:
            suffix += 1
            number = f"{base}{suffix}"
        return self._add(Account.objects.create(
            client_file=self.client_file,
            organization_id=self.client_file.organization_id,
            number=number,
            label=(name or number)[:300],
            kind=kind,
        ))

    def journal(self, kind: str) -> Journal:
        found = self._journals.get(kind)
        if found is None:
            found = self._journals[kind] = journal_for(self.client_file, kind)
        return found


def _third_party_code(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", normalise_name(name).upper())[:10] or "DIVERS"


def journal_for(client_file: ClientFile, kind: str) -> Journal:
    journals = Journal.objects.filter(client_file=client_file)
    found = journals.filter(kind=kind).order_by("-remote_id", "code").first()
    if found is None and kind == Journal.Kind.EXPENSE_REPORT:
        found = journals.filter(kind=Journal.Kind.PURCHASE).order_by("-remote_id", "code").first()
    if found is not None:
        return found
    code, label = DEFAULT_JOURNALS[kind]
    journal, _ = Journal.objects.get_or_create(
        client_file=client_file,
        code=code,
        defaults={"label": label, "kind": kind, "organization_id": client_file.organization_id},
    )
    return journal


def piece_number_for(kind: str, source_pk: int) -> str:
    """Deterministic: the same source always gives the same number (it is our dedup key)."""
    return f"QH-{PIECE_PREFIX.get(kind, 'OD')}-{source_pk:06d}"


# --- building entries from the mirror ---------------------------------------------------------
PdfFetcher = Callable[[Any], "tuple[str, bytes] | None"]


def fetch_supporting_pdf(source: Document | BankTransaction) -> tuple[str, bytes] | None:
    """The supporting document's (file name, bytes), read from the source's provider.

    Read through the connector's ``download_attachment`` (the connector contract); without an
    attachment, or when the provider cannot serve it now, the entry keeps only the reference.
    """
    external_id = (
        source.attachment_external_id
        if isinstance(source, Document)
        else (source.attachment_ids[0] if source.attachment_ids else "")
    )
    if not external_id:
        return None
    connector = source.connection.connector()
    if not connector.serves_attachments():
        return None
    try:
        file = connector.download_attachment(str(external_id))
        return file.name, file.content
    except ConnectorError as exc:
        logger.warning("attachment %s of %s could not be read: %s", external_id, source, exc)
        return None


@dataclass
class BuildReport:
    created: list[JournalEntry] = field(default_factory=list)
    blocked: int = 0
    skipped_outside_open_years: int = 0
    failed: list[str] = field(default_factory=list)


def _open_years(client_file: ClientFile) -> list[tuple[date, date]]:
    return list(
        FiscalYear.objects.filter(client_file=client_file, status=FiscalYear.Status.OPEN).values_list("start", "end")
    )


def _in_years(day: date | None, years: Sequence[tuple[date, date]]) -> bool:
    return day is not None and any(start <= day <= end for start, end in years)


def pending_documents(client_file: ClientFile) -> QuerySet[Document]:
    done = JournalEntry.objects.filter(client_file=client_file, source_document__isnull=False).values("source_document")
    return (
        Document.objects.for_org(client_file.organization_id)
        .filter(connection__provider="qonto", status__in=VALIDATED_DOCUMENT_STATUSES)
        .filter(kind__in=[Document.Kind.SUPPLIER_INVOICE, Document.Kind.BILL, Document.Kind.CLIENT_INVOICE,
                          Document.Kind.CREDIT_NOTE, Document.Kind.EXPENSE])
        .exclude(pk__in=done)
        .select_related("connection")
        .prefetch_related("lines")
        .order_by("issue_date", "pk")
    )


def pending_transactions(client_file: ClientFile) -> QuerySet[BankTransaction]:
    done = JournalEntry.objects.filter(client_file=client_file, source_transaction__isnull=False).values(
        "source_transaction"
    )
    return (
        BankTransaction.objects.for_org(client_file.organization_id)
        .filter(connection__provider="qonto", status__in=SETTLED_TRANSACTION_STATUSES, settled_at__isnull=False)
        .exclude(pk__in=done)
        .select_related("connection")
        .order_by("settled_at", "pk")
    )


def build_entries(client_file: ClientFile, *, fetch_pdf: PdfFetcher | None = None) -> BuildReport:
    """Turn validated Qonto documents and settled transactions into entries (once each).

    Sources dated outside the file's open fiscal years are left alone (counted). Each new entry
    is checked against the software's rules: VALIDATED if it passes, BLOCKED with the reasons
    otherwise. A realtime file then pushes what validated.
    """
    fetch = fetch_pdf or fetch_supporting_pdf
    report = BuildReport()
    years = _open_years(client_file)
    chart = _Chart(client_file)
    sources: Iterable[tuple[Any, date | None, Callable[..., JournalEntry | None]]] = chain(
        ((d, d.issue_date, _entry_from_document) for d in pending_documents(client_file)),
        ((t, timezone.localdate(t.settled_at) if t.settled_at else None, _entry_from_transaction)
         for t in pending_transactions(client_file)),
    )
    for source, day, build in sources:
        if not _in_years(day, years):
            report.skipped_outside_open_years += 1
            continue
        try:
            entry = build(client_file, chart, source, fetch)
        except (AccountantError, IntegrityError) as exc:
            report.failed.append(f"{source}: {exc}")
            continue
        if entry is not None:
            report.created.append(entry)
    for entry in report.created:
        violations = check_rules(entry)
        if violations:
            report.blocked += 1
        else:
            _mark_validated(entry)
    after_validation(client_file, [e for e in report.created if e.status == JournalEntry.Status.VALIDATED])
    return report


def _signed_lines(raw: Iterable[tuple[Account, Account | None, str, Decimal]]) -> list[LineSpec]:
    """Lines from signed amounts (positive = debit); zero amounts are dropped."""
    lines = []
    for account, aux, label, amount in raw:
        amount = Decimal(amount).quantize(CENT)
        if amount == 0:
            continue
        lines.append(LineSpec(account=account, aux_account=aux, label=label,
                              debit=amount if amount > 0 else ZERO, credit=-amount if amount < 0 else ZERO))
    return lines


def _save_sourced_entry(
    client_file: ClientFile, lines: Sequence[LineSpec], source: Document | BankTransaction,
    attachment_id: str, fetch: PdfFetcher, **fields: Any,
) -> JournalEntry:
    """Save an entry built from a synced record, with its supporting document: referenced by the
    record's attachment id and, when ``fetch`` brings the file, stored on the entry."""
    fields["supporting_document_ref"] = (
        f"{source.connection.provider}:attachment:{attachment_id}" if attachment_id else ""
    )
    found = fetch(source)
    entry = save_entry(client_file, lines, **fields)
    if found:
        name, content = found
        entry.supporting_file.save(name or "piece.pdf", ContentFile(content), save=True)
    return entry


def _entry_from_document(
    client_file: ClientFile, chart: _Chart, document: Document, fetch: PdfFetcher
) -> JournalEntry | None:
    total = Decimal(document.total_amount).quantize(CENT)
    vat = Decimal(document.tax_amount or 0).quantize(CENT)
    net = total - vat
    name = document.counterparty_name or document.number or "Tiers"
    number = document.number or document.external_id
    if document.kind in (Document.Kind.SUPPLIER_INVOICE, Document.Kind.BILL):
        kind = JournalEntry.Kind.PURCHASE
        collective = chart.general(SUPPLIERS)
        aux = chart.third_party(Account.Kind.SUPPLIER, name)
        label = f"Facture {number} {name}"
        expense_lines = _document_lines(chart, document, net, PURCHASES)
        raw = [*((acc, None, name, amt) for acc, amt in expense_lines),
               (chart.general(DEDUCTIBLE_VAT), None, "TVA déductible", vat),
               (collective, aux, name, -total)]
    elif document.kind == Document.Kind.EXPENSE:
        kind = JournalEntry.Kind.EXPENSE_REPORT
        label = f"Note de frais {number} {name}"
        raw = [(chart.general(TRAVEL), None, name, net),
               (chart.general(DEDUCTIBLE_VAT), None, "TVA déductible", vat),
               (chart.general(EMPLOYEES), None, name, -total)]
    else:
        kind = JournalEntry.Kind.SALE
        # A credit note is a sale with the opposite signs (the mirror may store it positive).
        sign = Decimal(-1) if document.kind == Document.Kind.CREDIT_NOTE and total > 0 else Decimal(1)
        collective = chart.general(CUSTOMERS)
        aux = chart.third_party(Account.Kind.CUSTOMER, name)
        word = "Avoir" if sign < 0 else "Facture"
        label = f"{word} {number} {name}"
        revenue_lines = _document_lines(chart, document, net, SERVICES_SOLD)
        raw = [(collective, aux, name, sign * total),
               *((acc, None, name, -sign * amt) for acc, amt in revenue_lines),
               (chart.general(COLLECTED_VAT), None, "TVA collectée", -sign * vat)]
    lines = _signed_lines(raw)
    fields: dict[str, Any] = {
        "journal": chart.journal({
            JournalEntry.Kind.PURCHASE: Journal.Kind.PURCHASE,
            JournalEntry.Kind.SALE: Journal.Kind.SALE,
            JournalEntry.Kind.EXPENSE_REPORT: Journal.Kind.EXPENSE_REPORT,
        }[kind]),
        "kind": kind,
        "date": document.issue_date,
        "due_date": document.due_date,
        "label": label[:500],
        "piece_number": piece_number_for(kind, document.pk),
        "reference": (document.number or "")[:100],
        "currency": document.currency or "EUR",
        "source_document": document,
        "status": JournalEntry.Status.DRAFT,
    }
    return _save_sourced_entry(client_file, lines, document, document.attachment_external_id, fetch, **fields)


def _document_lines(
    chart: _Chart, document: Document, net: Decimal, default: tuple[str, str]
) -> list[tuple[Account, Decimal]]:
    """Net amount by account: the document's own line accounts when they add up, else one line."""
    lines = list(document.lines.all())
    coded = [(line.account_code.strip(), Decimal(line.amount).quantize(CENT)) for line in lines if line.account_code]
    if coded and len(coded) == len(lines) and sum(amount for _, amount in coded) == net:
        grouped: dict[str, Decimal] = {}
        for code, amount in coded:
            grouped[code] = grouped.get(code, ZERO) + amount
        out = []
        for code, amount in grouped.items():
            out.append((chart.numbered(code, f"Compte {code}"), amount))
        return out
    return [(chart.general(default), net)]


def _entry_from_transaction(
    client_file: ClientFile, chart: _Chart, row: BankTransaction, fetch: PdfFetcher
) -> JournalEntry | None:
    amount = Decimal(row.amount).quantize(CENT)
    if amount == 0:
        return None
    bank = chart.general(BANK)
    name = row.counterparty_name or row.label or "Opération bancaire"
    if row.operation_type in ("qonto_fee", "fee", "bank_fee"):
        other, aux = chart.general(BANK_FEES), None
    else:
        kind = Account.Kind.SUPPLIER if amount < 0 else Account.Kind.CUSTOMER
        aux = chart.known_third_party(kind, name)
        if aux is not None:
            other = chart.general(SUPPLIERS if amount < 0 else CUSTOMERS)
        else:
            # Nobody known by that name: the suspense account, for the accountant to allocate.
            other = chart.general(SUSPENSE)
    day = timezone.localdate(row.settled_at)
    label = f"{'Paiement' if amount < 0 else 'Encaissement'} {name}"
    lines = _signed_lines([(bank, None, label, amount), (other, aux, name, -amount)])
    fields: dict[str, Any] = {
        "journal": chart.journal(Journal.Kind.BANK),
        "kind": JournalEntry.Kind.BANK,
        "date": day,
        "label": label[:500],
        "piece_number": piece_number_for(JournalEntry.Kind.BANK, row.pk),
        "reference": (row.reference or "")[:100],
        "currency": row.currency or "EUR",
        "source_transaction": row,
        "status": JournalEntry.Status.DRAFT,
    }
    attachment_id = str(row.attachment_ids[0]) if row.attachment_ids else ""
    return _save_sourced_entry(client_file, lines, row, attachment_id, fetch, **fields)


# --- rules ------------------------------------------------------------------------------------
def entry_facts(entry: JournalEntry) -> rulebook.EntryFacts:
    lines = list(entry.lines.select_related("account", "aux_account"))
    return rulebook.EntryFacts(
        label=entry.label,
        date=entry.date,
        journal_code=entry.journal.code,
        journal_kind=entry.journal.kind,
        journal_remote_id=entry.journal.remote_id,
        piece_number=entry.piece_number,
        lines=[
            rulebook.LineFacts(
                account_number=line.account.number,
                account_kind=line.account.kind,
                aux_number=line.aux_account.number if line.aux_account else "",
                aux_kind=line.aux_account.kind if line.aux_account else "",
                label=line.label,
                debit=line.debit,
                credit=line.credit,
            )
            for line in lines
        ],
        fiscal_years=[
            (fy.start, fy.end, fy.status == FiscalYear.Status.OPEN)
            for fy in FiscalYear.objects.filter(client_file_id=entry.client_file_id)
        ],
    )


def check_rules(entry: JournalEntry, software: str | None = None) -> list[dict[str, str]]:
    """Store the software's objections on the entry; any objection blocks it (status BLOCKED)."""
    software = software or entry.client_file.software or DEFAULT_SOFTWARE
    violations = [v.as_json() for v in rulebook.entry_violations(entry_facts(entry), software)]
    entry.violations = violations
    fields = ["violations", "updated_at"]
    if violations and entry.status in (JournalEntry.Status.DRAFT, JournalEntry.Status.VALIDATED,
                                       JournalEntry.Status.ERROR, JournalEntry.Status.BLOCKED):
        entry.status = JournalEntry.Status.BLOCKED
        fields.append("status")
    elif not violations and entry.status == JournalEntry.Status.BLOCKED:
        # Fixed (or the year reopened): ready again.
        entry.status = JournalEntry.Status.VALIDATED
        fields.append("status")
    entry.save(update_fields=fields)
    return violations


def _mark_validated(entry: JournalEntry) -> None:
    entry.status = JournalEntry.Status.VALIDATED
    entry.validated_at = entry.validated_at or timezone.now()
    entry.save(update_fields=["status", "validated_at", "updated_at"])


def validate_entry(entry: JournalEntry, user: Any = None) -> JournalEntry:
    """A person validates a draft (or re-checks a blocked entry); realtime files push at once."""
    if user is not None:
        require_firm_member(user, entry.client_file.firm_id)
    if entry.status == JournalEntry.Status.PUSHED:
        return entry
    if check_rules(entry):
        return entry
    _mark_validated(entry)
    after_validation(entry.client_file, [entry])
    return entry


def after_validation(client_file: ClientFile, entries: Sequence[JournalEntry]) -> None:
    """Frequency "realtime": push right after validation. Daily and manual wait."""
    if client_file.sync_frequency != ClientFile.Frequency.REALTIME or client_file.status != ClientFile.Status.ACTIVE:
        return
    for entry in entries:
        try:
            push_entry(entry)
        except AccountantError as exc:
            logger.info("entry %s not pushed: %s", entry.pk, exc)


# --- pushes -----------------------------------------------------------------------------------
def idempotency_key(entry: JournalEntry) -> str:
    cf = entry.client_file
    return f"{cf.software}:entry:{cf.remote_company_id}:{entry.piece_number}:r{entry.push_revision}"


def push_payload(entry: JournalEntry) -> dict[str, Any]:
    lines = []
    for line in entry.lines.select_related("account", "aux_account"):
        target = line.aux_account or line.account
        lines.append({
            "account_id": target.remote_id,
            "account_number": target.number,
            "account_label": target.label,
            "label": line.label,
            "debit": f"{line.debit:.2f}",
            "credit": f"{line.credit:.2f}",
        })
    return {
        "company_id": entry.client_file.remote_company_id,
        "journal_id": entry.journal.remote_id,
        "date": entry.date.isoformat(),
        "due_date": entry.due_date.isoformat() if entry.due_date else None,
        "label": entry.label,
        "piece_number": entry.piece_number,
        "currency": entry.currency,
        "filename": entry.supporting_file.name.rsplit("/", 1)[-1] if entry.supporting_file else "",
        "lines": lines,
    }


def _enqueue(entry: JournalEntry) -> Push:
    """The entry's outbox row (created once per idempotency key), for the client organisation:
    the firm's connection is shared by all its client files."""
    client_file = entry.client_file
    key = idempotency_key(entry)
    payload = push_payload(entry)
    content = None
    if entry.supporting_file and not Push.objects.filter(connection=client_file.connection, idempotency_key=key).exists():
        entry.supporting_file.open("rb")
        try:
            content = ContentFile(entry.supporting_file.read(), name=payload.get("filename") or f"{key}.pdf")
        finally:
            entry.supporting_file.close()
    return outbox.enqueue_push(
        client_file.connection,
        "ledger_entry.create",
        key,
        payload,
        file=content,
        source=(ENTRY_SOURCE, str(entry.pk)),
        organization_id=entry.organization_id,
    )


def push_entry(entry: JournalEntry, *, send_now: bool = True) -> Push | None:
    """Push one entry through the outbox: checked first, enqueued once, then sent and settled.

    Returns the push, or None when a rule blocks the entry (reasons on ``entry.violations``).
    """
    entry.refresh_from_db()
    client_file = entry.client_file
    if entry.status == JournalEntry.Status.PUSHED:
        return entry.push
    if client_file.status != ClientFile.Status.ACTIVE:
        raise AccountantError(f"The integration of {client_file.organization} is not active: nothing is pushed.")
    if client_file.connection is None or client_file.connection.status != Connection.Status.ACTIVE:
        raise AccountantError("The firm's software connection is not active: edit the API connection.")
    if entry.status == JournalEntry.Status.DRAFT:
        raise AccountantError("Validate the entry before pushing it.")
    if check_rules(entry):
        return None
    if entry.push_id is not None and entry.push.status in (Push.Status.DEAD, Push.Status.CANCELLED):
        # A new attempt after a refusal or a disabled period: a new key, same piece number (the
        # connector still looks for it in the software before creating).
        entry.push_revision += 1
    push = _enqueue(entry)
    if push.status == Push.Status.FAILED:
        # Asked for now (validation, button, evening job): do not wait for the backoff.
        Push.objects.filter(pk=push.pk, status=Push.Status.FAILED).update(next_attempt_at=timezone.now())
    if entry.push_id != push.pk:
        entry.push = push
        entry.save(update_fields=["push", "push_revision", "updated_at"])
    if send_now:
        push = send_push(push.pk)
        settle_entry(entry)
    return push


def settle_entry(entry: JournalEntry) -> JournalEntry:
    """Copy the outcome of the entry's push onto the entry and its client file."""
    entry.refresh_from_db()
    push = entry.push
    if push is None:
        return entry
    client_file = entry.client_file
    now = timezone.now()
    if push.status == Push.Status.DONE:
        entry.status = JournalEntry.Status.PUSHED
        entry.remote_id = push.remote_id
        entry.pushed_at = push.done_at or now
        entry.push_error = ""
        entry.save(update_fields=["status", "remote_id", "pushed_at", "push_error", "updated_at"])
        for number, remote_id in (push.response or {}).get("accounts", {}).items():
            Account.objects.filter(client_file=client_file, number=number, remote_id="").update(remote_id=str(remote_id))
        ClientFile.objects.filter(pk=client_file.pk).update(
            last_push_at=entry.pushed_at, last_error="", last_error_at=None, updated_at=now
        )
    elif push.status == Push.Status.DEAD:
        entry.status = JournalEntry.Status.ERROR
        entry.push_error = push.last_error
        entry.save(update_fields=["status", "push_error", "updated_at"])
        ClientFile.objects.filter(pk=client_file.pk).update(
            last_error=f"{entry.piece_number}: {push.last_error}"[:5000], last_error_at=now, updated_at=now
        )
    elif push.status == Push.Status.FAILED:
        # Still retried by the outbox; shown meanwhile.
        entry.push_error = f"Will retry: {push.last_error}"
        entry.save(update_fields=["push_error", "updated_at"])
        ClientFile.objects.filter(pk=client_file.pk).update(
            last_error=f"{entry.piece_number}: {push.last_error}"[:5000], last_error_at=now, updated_at=now
        )
    return entry


def settle_in_flight(client_file: ClientFile | None = None) -> int:
    """Settle every entry whose push ended since it was enqueued (the outbox drain retries alone)."""
    entries = JournalEntry.objects.filter(
        status__in=[JournalEntry.Status.VALIDATED, JournalEntry.Status.ERROR], push__isnull=False
    ).filter(Q(push__status__in=[Push.Status.DONE, Push.Status.DEAD, Push.Status.FAILED]))
    if client_file is not None:
        entries = entries.filter(client_file=client_file)
    count = 0
    for entry in entries:
        settle_entry(entry)
        count += 1
    return count


@dataclass
class PushReport:
    pushed: int = 0
    blocked: int = 0
    failed: int = 0
    built: int = 0


def push_pending(client_file: ClientFile, *, build: bool = True, fetch_pdf: PdfFetcher | None = None) -> PushReport:
    """Build what is new, then push every validated entry not pushed yet (button and evening job)."""
    if client_file.status != ClientFile.Status.ACTIVE:
        raise AccountantError(f"The integration of {client_file.organization} is not active.")
    report = PushReport()
    if build:
        report.built = len(build_entries(client_file, fetch_pdf=fetch_pdf).created)
    settle_in_flight(client_file)
    due = JournalEntry.objects.filter(
        client_file=client_file,
        status__in=[JournalEntry.Status.VALIDATED, JournalEntry.Status.ERROR, JournalEntry.Status.BLOCKED],
    ).order_by("date", "pk")
    for entry in due:
        push = push_entry(entry)
        entry.refresh_from_db()
        if push is None:
            report.blocked += 1
        elif entry.status == JournalEntry.Status.PUSHED:
            report.pushed += 1
        else:
            report.failed += 1
    return report


# --- document pull for tax advisers -----------------------------------------------------------
@dataclass(frozen=True)
class PaidDocument:
    document: Document
    attachments: list[Attachment]


def last_open_fiscal_year(client_file: ClientFile) -> FiscalYear | None:
    return (
        FiscalYear.objects.filter(client_file=client_file, status=FiscalYear.Status.OPEN).order_by("-start").first()
    )


def paid_documents_of_last_open_year(client_file: ClientFile) -> list[PaidDocument]:
    """Paid client and supplier invoices of the last open tax year, with their PDFs' metadata.

    Matching them to bank transactions belongs to reconciliation (its "paid documents →
    accountant entries" route); this only lists what is to be matched.
    """
    year = last_open_fiscal_year(client_file)
    if year is None:
        return []
    start = timezone.make_aware(datetime.combine(year.start, datetime.min.time()))
    end = timezone.make_aware(datetime.combine(year.end, datetime.max.time()))
    documents = list(
        Document.objects.for_org(client_file.organization_id)
        .filter(kind__in=[Document.Kind.CLIENT_INVOICE, Document.Kind.SUPPLIER_INVOICE, Document.Kind.BILL])
        .filter(Q(paid_at__range=(start, end)) | Q(paid_at__isnull=True, status="paid",
                                                   issue_date__range=(year.start, year.end)))
        .order_by("issue_date", "pk")
    )
    wanted = {d.attachment_external_id for d in documents if d.attachment_external_id}
    by_key: dict[tuple[int, str], list[Attachment]] = {}
    for attachment in Attachment.objects.for_org(client_file.organization_id).filter(
        Q(external_id__in=wanted) | Q(parent_external_id__in=[d.external_id for d in documents])
    ):
        by_key.setdefault((attachment.connection_id, attachment.external_id), []).append(attachment)
        by_key.setdefault((attachment.connection_id, "parent:" + attachment.parent_external_id), []).append(attachment)
    out = []
    for document in documents:
        found = by_key.get((document.connection_id, document.attachment_external_id), []) + [
            a for a in by_key.get((document.connection_id, "parent:" + document.external_id), [])
            if a.external_id != document.attachment_external_id
        ]
        out.append(PaidDocument(document, found))
    return out
