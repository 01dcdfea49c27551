"""A PostgreSQL role that may not make or read billcycle's tables is told to be given the
rights, or to connect as a role that has them: not to find a database of its own, which the
same role could not use either (QA 15, L4)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.e2e.cli import billcycle, jsonl

USAGE = {"type": "usage", "message_id": "u-1", "customer_id": "cus_1", "metric": "api_calls",
         "quantity": "5", "timestamp": "2026-10-05T00:00:00Z"}


@pytest.fixture
def stranger(fresh_pg_url: str) -> Iterator[str]:
    """A role that may connect to the test's database and do nothing else there (PostgreSQL
    15 on: no CREATE on the schema public for roles other than its owner)."""
    role = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'rightpw'").format(
            sql.Identifier(role)))
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    parts = urlsplit(fresh_pg_url)
    yield urlunsplit(parts._replace(netloc=f"{role}:rightpw@{parts.hostname}:{parts.port}"))
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _role_and_database(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.username or "", parts.path.lstrip("/")


def test_a_role_that_may_not_make_the_tables_is_told_to_be_given_the_rights(
    fresh_pg_url: str, stranger: str,
) -> None:
    refused = billcycle(stranger, "ingest", "-", stdin=jsonl(USAGE), check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    role, database = _role_and_database(stranger)
    assert "permission denied" in refused.stderr
    assert f"the PostgreSQL role {role} may not" in refused.stderr
    assert f"GRANT CREATE, USAGE ON SCHEMA public TO {role}" in refused.stderr
    assert f"database {database}" in refused.stderr
    assert "database of its own" not in refused.stderr
    assert "rightpw" not in refused.stderr
    # The advice given works: granted the schema, the role makes the store, and owns it.
    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(
            sql.Identifier(role)))
    billcycle(stranger, "ingest", "-", stdin=jsonl(USAGE))
    assert billcycle(stranger, "invoices").returncode == 0


def test_a_role_that_may_not_read_the_store_is_told_to_be_given_the_rights(
    fresh_pg_url: str, stranger: str,
) -> None:
    billcycle(fresh_pg_url, "ingest", "-", stdin=jsonl(USAGE))  # made by the owner
    refused = billcycle(stranger, "invoices", check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    role, database = _role_and_database(stranger)
    assert "permission denied" in refused.stderr
    assert f"the PostgreSQL role {role} may not" in refused.stderr
    assert f"database {database}" in refused.stderr
    assert "database of its own" not in refused.stderr
