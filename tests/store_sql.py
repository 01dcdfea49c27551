"""Statements run on a store's database behind billcycle's back: what another process, or an
earlier billcycle, left there. For tests only."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import psycopg


def on_store(url: str, *statements: str) -> Any:
    """Run `statements` on the store at `url` in one transaction; the last one's first row."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite, lite:
            found = None
            for statement in statements:
                found = lite.execute(statement).fetchone()
            return found
    with psycopg.connect(url) as pg:
        cursor = None
        for statement in statements:
            cursor = pg.execute(statement)
        return cursor.fetchone() if cursor is not None and cursor.description else None
