"""The expand-only rule, checked on the migrations' text (README, "Upgrades").

Release N's migrations must leave a database that release N-1 (tests/upgrade/PREVIOUS)
still reads and writes: a migration the previous release applied is never edited (sqlx
checks each applied migration's checksum), and a migration added since only expands:
new tables, new nullable or defaulted columns, new indexes and functions. What would
break N-1 (dropping or renaming, a new NOT NULL without a default, a changed type, a
constraint N-1's writes do not satisfy) waits for the release after, once N-1 is gone.
The upgrade test (tests/upgrade) then runs N-1 on the migrated database for real.
"""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"


def previous_commit():
    text = (ROOT / "tests/upgrade/PREVIOUS").read_text()
    return re.search(r"^commit=([0-9a-f]{40})$", text, re.M).group(1)


def previous_migrations():
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", previous_commit(), "migrations/"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return {pathlib.Path(p).name: p for p in listing if p.endswith(".sql")}


# Statements that take something away from, or demand something of, the previous release.
CONTRACTING = [
    (r"\bdrop\s+(table|column|index|view|function|type|trigger|sequence|schema)\b", "drops"),
    (r"\brename\b", "renames"),
    (r"\balter\s+column\s+\w+\s+(set\s+data\s+)?type\b", "changes a column's type"),
    (r"\bset\s+not\s+null\b", "makes a column NOT NULL"),
    (r"\bdrop\s+(not\s+null|default|constraint)\b", "drops a default or constraint"),
    (r"\btruncate\b", "empties a table"),
]


def statements(sql):
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def test_the_previous_release_finds_its_migrations_unchanged():
    previous = previous_migrations()
    assert previous, "the previous release has migrations"
    for name, path in previous.items():
        then = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{previous_commit()}:{path}"],
            check=True, capture_output=True,
        ).stdout
        now = (MIGRATIONS / name).read_bytes()
        assert now == then, f"{name} was edited after release; add a new migration instead"


def test_migrations_since_the_previous_release_only_expand():
    previous = previous_migrations()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name in previous:
            continue
        for statement in statements(path.read_text().lower()):
            for pattern, what in CONTRACTING:
                assert not re.search(pattern, statement), (
                    f"{path.name} {what}: the previous release may still run on this database; "
                    f"do it in the release after ({statement[:120]})"
                )
            added = re.search(r"\badd\s+column\b(.*)", statement, re.S)
            if added:
                column = added.group(1)
                assert "not null" not in column or "default" in column, (
                    f"{path.name} adds a NOT NULL column without a default: the previous "
                    f"release's inserts would fail ({statement[:120]})"
                )


def test_the_rule_catches_what_would_break_the_previous_release():
    for sql in [
        "alter table event rename column txid to tx",
        "alter table event drop column traceparent",
        "alter table repository alter column name set not null",
        "alter table event alter column provider type int using 0",
    ]:
        assert any(re.search(p, s) for s in statements(sql) for p, _ in CONTRACTING), sql
