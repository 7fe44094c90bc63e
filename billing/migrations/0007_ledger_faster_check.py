"""The ledger's balance check, once per entry instead of once per line (issue 12, posting ≥ 2,000 charges/s).

0005 checked an entry at commit once for each of its lines (a charge's 10 lines: 10 identical sums), joining
the accounts with a plan chosen on the tables' statistics: on a young table a hash of every account, 0.3 ms a
line. Now:
- `ledger_lines_balanced` runs once per INSERT statement on the lines and checks every entry that statement
  added lines to, with all its lines (at least two, adding up to zero, in one currency), so lines slipped into
  an entry posted earlier are refused too. An entry's lines therefore go in with one statement (as `post` and
  `post_many` write them);
- `ledger_entry_balanced` (same name, so `SET CONSTRAINTS ledger_entry_balanced IMMEDIATE` still works) is a
  deferred constraint trigger on the entry: at commit each entry posted in the transaction must have lines.
Each entry's lines are looked up through the entry_id index and each line's currency through the account's
primary key, whatever the planner's statistics say (LATERAL, a subquery per line).
"""

from django.db import migrations

FASTER_CHECK = """
CREATE FUNCTION billing_ledger_entry_balanced_once() RETURNS trigger AS $$
BEGIN
    -- Lines are checked as they go in (ledger_lines_balanced); what is left is an entry without them.
    IF (SELECT COUNT(*) FROM (SELECT 1 FROM billing_ledgerline l WHERE l.entry_id = NEW.id LIMIT 2) two) < 2 THEN
        RAISE EXCEPTION 'ledger entry % does not balance (fewer than two lines)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION billing_ledger_lines_balanced() RETURNS trigger AS $$
DECLARE fault record;
BEGIN
    SELECT n.entry_id, s.total, s.lines, s.currencies INTO fault
    FROM (SELECT DISTINCT entry_id FROM new_lines) n
    CROSS JOIN LATERAL (
        SELECT COALESCE(SUM(l.amount_minor), 0) AS total, COUNT(*) AS lines,
               COUNT(DISTINCT (SELECT a.currency FROM billing_ledgeraccount a WHERE a.id = l.account_id))
                   AS currencies
        FROM billing_ledgerline l WHERE l.entry_id = n.entry_id) s
    WHERE s.lines < 2 OR s.total <> 0 OR s.currencies > 1
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger entry % does not balance (% minor units over % lines in % currencies)',
            fault.entry_id, fault.total, fault.lines, fault.currencies USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

DROP TRIGGER ledger_entry_balanced ON billing_ledgerline;
DROP FUNCTION billing_ledger_entry_balanced();
CREATE CONSTRAINT TRIGGER ledger_entry_balanced AFTER INSERT ON billing_ledgerentry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing_ledger_entry_balanced_once();
CREATE TRIGGER ledger_lines_balanced AFTER INSERT ON billing_ledgerline
    REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION billing_ledger_lines_balanced();
"""

# Back to 0005's check, as 0005 created it.
PER_LINE_CHECK = """
DROP TRIGGER IF EXISTS ledger_lines_balanced ON billing_ledgerline;
DROP TRIGGER IF EXISTS ledger_entry_balanced ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_ledger_lines_balanced();
DROP FUNCTION IF EXISTS billing_ledger_entry_balanced_once();
CREATE FUNCTION billing_ledger_entry_balanced() RETURNS trigger AS $$
DECLARE total numeric; currencies integer;
BEGIN
    SELECT COALESCE(SUM(l.amount_minor), 0), COUNT(DISTINCT a.currency) INTO total, currencies
    FROM billing_ledgerline l JOIN billing_ledgeraccount a ON a.id = l.account_id
    WHERE l.entry_id = NEW.entry_id;
    IF total <> 0 OR currencies > 1 THEN
        RAISE EXCEPTION 'ledger entry % does not balance (% minor units over % currencies)',
            NEW.entry_id, total, currencies USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER ledger_entry_balanced AFTER INSERT ON billing_ledgerline
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing_ledger_entry_balanced();
"""


def faster(apps: object, schema_editor: object) -> None:
    if schema_editor.connection.vendor == "postgresql":  # type: ignore[attr-defined]
        schema_editor.execute(FASTER_CHECK, params=None)  # type: ignore[attr-defined]


def per_line(apps: object, schema_editor: object) -> None:
    if schema_editor.connection.vendor == "postgresql":  # type: ignore[attr-defined]
        schema_editor.execute(PER_LINE_CHECK, params=None)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_payments"),
    ]

    operations = [
        migrations.RunPython(faster, per_line),
    ]
