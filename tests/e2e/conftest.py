"""The store each end-to-end test runs against: the embedded SQLite file, then PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'billcycle.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url
