"""PostgreSQL only: a deferred constraint trigger that keeps every entry's lines balanced.

``JournalEntry`` carries ``total_debit = total_credit`` as a CheckConstraint (all databases). This
trigger ties the lines to those totals: at commit, for every entry whose lines or totals changed
in the transaction, the sums of its lines must equal its totals, otherwise the whole transaction
is refused. Deferred to commit because an entry's lines are written one by one. SQLite has no
deferrable triggers; there ``accountant.services.save_entry`` is the guard (see
``accountant/models.py``).
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION accountant_check_entry_balanced() RETURNS trigger AS $$
DECLARE
    target_id bigint;
    lines_debit numeric;
    lines_credit numeric;
    entry_debit numeric;
    entry_credit numeric;
BEGIN
    IF TG_TABLE_NAME = 'accountant_entryline' THEN
        IF TG_OP = 'DELETE' THEN target_id := OLD.entry_id; ELSE target_id := NEW.entry_id; END IF;
    ELSE
        target_id := NEW.id;
    END IF;
    SELECT total_debit, total_credit INTO entry_debit, entry_credit
        FROM accountant_journalentry WHERE id = target_id;
    IF NOT FOUND THEN
        RETURN NULL;  -- the entry itself was deleted in this transaction
    END IF;
    SELECT COALESCE(SUM(debit), 0), COALESCE(SUM(credit), 0) INTO lines_debit, lines_credit
        FROM accountant_entryline WHERE entry_id = target_id;
    IF lines_debit <> entry_debit OR lines_credit <> entry_credit OR lines_debit <> lines_credit THEN
        RAISE EXCEPTION 'journal entry % is not balanced: lines debit %, credit %; entry totals %, %',
            target_id, lines_debit, lines_credit, entry_debit, entry_credit
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER accountant_entryline_balanced
    AFTER INSERT OR UPDATE OR DELETE ON accountant_entryline
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION accountant_check_entry_balanced();

CREATE CONSTRAINT TRIGGER accountant_journalentry_balanced
    AFTER INSERT OR UPDATE OF total_debit, total_credit ON accountant_journalentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION accountant_check_entry_balanced();
"""

DROP = """
DROP TRIGGER IF EXISTS accountant_journalentry_balanced ON accountant_journalentry;
DROP TRIGGER IF EXISTS accountant_entryline_balanced ON accountant_entryline;
DROP FUNCTION IF EXISTS accountant_check_entry_balanced();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # A plain cursor without parameters: several statements and $$ bodies in one go.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("accountant", "0001_initial")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
