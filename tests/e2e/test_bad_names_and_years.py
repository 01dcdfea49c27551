"""Input PostgreSQL cannot store, or that is a typo of a year, is a dead letter with its reason,
and nothing else of the input is lost (contract.md: "Nothing else in the stream is held up or
lost"), on both stores alike."""

from __future__ import annotations

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import usage


def test_a_control_character_in_an_id_or_a_name_is_a_dead_letter_not_a_lost_file(
    db: str,
) -> None:
    # QA (helper-25, F7 HIGH): U+0000 in an id stopped Kafka ingest on PostgreSQL for good,
    # and an ingested file was lost whole; SQLite took it.
    nul = usage("u-\u0000", "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z")
    tab = usage("u-3", "cus_\t1", "api_calls", "5", "2026-10-05T00:00:00Z")
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        usage("u-1", "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z"), nul, tab,
        usage("u-2", "cus_1", "api_calls", "7", "2026-10-06T00:00:00Z")))
    assert (ingested["accepted"], len(ingested["rejected"])) == (2, 2)
    reasons = [d["reason"] for d in billcycle_json(db, "deadletters")]
    assert "holds the control character U+0000 at position 3" in reasons[0]
    assert "holds the control character U+0009 at position 5" in reasons[1]
    assert reasons[0].startswith("usage u-\\u0000: id: ")  # shown escaped, as JSON writes it



def test_a_c1_control_character_written_plainly_in_an_id_is_a_dead_letter(db: str) -> None:
    # QA (helper-28, F9): U+0085, written as itself (no escape), was taken in an id.
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        usage("u-\u0085", "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z"),
        usage("u-\u00e9", "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z")))
    assert ingested["accepted"] == 1
    [reason] = [r["reason"] for r in ingested["rejected"]]
    assert "holds the control character U+0085 at position 3" in reason


def test_a_timestamp_outside_the_years_1900_to_2999_is_refused_as_a_typo(db: str) -> None:
    # QA (helper-25, F8): a watermark in 3026 marked its metric complete for a thousand years,
    # and watermarks never move back.
    typo = {"type": "usage.watermark", "id": "wm-1", "occurred_at": "2026-10-06T00:00:00Z",
            "metric": "api_calls", "complete_through": "3026-10-06T00:00:00Z"}
    early = usage("u-1", "cus_1", "api_calls", "5", "0026-10-05T00:00:00Z")
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(typo, early))
    assert ingested["accepted"] == 0
    assert [r["reason"] for r in ingested["rejected"]] == [
        'usage.watermark wm-1: complete_through "3026-10-06T00:00:00Z" is outside the years '
        "1900 to 2999; check the year",
        'usage u-1: occurred_at "0026-10-05T00:00:00Z" is outside the years 1900 to 2999; '
        "check the year"]


def test_an_id_too_long_to_index_is_a_dead_letter(db: str) -> None:
    # QA (helper-25, F7): an id of 3,000 characters passed validation, and PostgreSQL's index
    # refused it: consume waited for PostgreSQL for ever.
    long = usage("u" * 3000, "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z")
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        long, usage("u-2", "cus_1", "api_calls", "7", "2026-10-06T00:00:00Z")))
    assert ingested["accepted"] == 1
    [reason] = [r["reason"] for r in ingested["rejected"]]
    assert reason == (f"usage {'u' * 57}...: id: is 3000 characters long; ids, metrics and "
                      "names have at most 256 characters and 512 bytes")


def test_a_name_of_few_characters_but_many_bytes_is_a_dead_letter(db: str) -> None:
    # The meters' keys hold up to four names: four of 200 emoji (800 bytes) each are over
    # PostgreSQL's index entry size, met by the fold of the meters after ingest accepted them.
    wide = usage("u-1", "\U0001F600" * 200, "api_calls", "5", "2026-10-05T00:00:00Z")
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(wide))
    [reason] = [r["reason"] for r in ingested["rejected"]]
    assert reason == ("usage u-1: customer_id: is 200 characters long, 800 bytes in UTF-8; ids, "
                      "metrics and names have at most 256 characters and 512 bytes")


def test_a_database_holding_tables_billcycle_did_not_make_is_a_one_line_reason(
    fresh_pg_url: str,
) -> None:
    # QA (helper-25, F3): another application's table of the same name gave a traceback.
    import psycopg

    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE received_messages (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO received_messages (body) VALUES ('theirs')")
    refused = billcycle(fresh_pg_url, "ingest", "-", stdin=jsonl(
        usage("u-1", "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z")), check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "holds tables billcycle cannot use" in refused.stderr


def test_another_applications_table_named_as_a_view_is_never_dropped(fresh_pg_url: str) -> None:
    # QA (helper-25, F12 HIGH): with tables collections and collections_tracking of another
    # application in the database, project took them for a view of another billcycle
    # version and dropped them, rows and all.
    import psycopg

    with psycopg.connect(fresh_pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE collections (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO collections (name) VALUES ('stamps'), ('coins')")
        conn.execute("CREATE TABLE collections_tracking (application_name text PRIMARY KEY, "
                     "notification_id bigint)")
    billcycle(fresh_pg_url, "ingest", "-", stdin=jsonl(
        usage("u-1", "cus_1", "api_calls", "5", "2026-10-05T00:00:00Z")))
    refused = billcycle(fresh_pg_url, "project", check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert ("the table collections was not made by billcycle (its columns: id, name)"
            in refused.stderr)
    with psycopg.connect(fresh_pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM collections").fetchone() == (2,)
