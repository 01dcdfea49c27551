"""Store selection by URL: `store_env(url)` is the environment an Application is built with.

    app = BillingApplication(env=store_env("postgresql://billcycle@127.0.0.1:5432/billcycle"))

The library picks its InfrastructureFactory from PERSISTENCE_MODULE, and the factory reads
the rest of its settings from the same environment. `store_env(url, create=False)` opens only a
store that is there: the factories refuse a database without billcycle's tables (NoStore)
rather than make them, so that a command given the wrong database is not answered from an
empty store made there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import uuid4

SQLITE_MODULE = "infra.store.sqlite"
POSTGRES_MODULE = "infra.store.postgres"

# How long a writer waits for another writer's lock before failing. The PostgreSQL recorder
# takes an EXCLUSIVE lock on the events table for every insert, so concurrent savers queue;
# the library then retries a timed-out insert up to 10 times. A bound (rather than 0, which
# means wait forever) turns a stuck writer into an error instead of a silent hang.
LOCK_TIMEOUT_SECONDS = "10"

_USAGE = "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"

# Set (to "y") where the store must be there already. CREATE_TABLE stays set all the same: on
# a store that is there it makes what a later version added (indexes, tables) and records the
# store's format.
STORE_MUST_EXIST = "STORE_MUST_EXIST"


class NoStore(OSError):
    """The database holds no billcycle store, and the command may not make one: why not."""


def store_env(url: str, *, create: bool = True) -> dict[str, str]:
    """The PERSISTENCE_MODULE environment for a store URL (sqlite:///PATH, postgresql://...);
    without `create`, a database without billcycle's tables is refused (NoStore)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        env = _sqlite_env(url)
    elif scheme in ("postgresql", "postgres"):
        env = _postgres_env(url)
    else:
        raise ValueError(f'unsupported store URL "{redacted(url)}"; {_USAGE}')
    return env if create else {**env, STORE_MUST_EXIST: "y"}


def must_exist(env: Mapping[str, str]) -> bool:
    """Whether the factory of `env` is to refuse a database without billcycle's tables."""
    return env.get(STORE_MUST_EXIST) == "y"


# How SQLITE_DBNAME begins for sqlite:///:memory: (a private shared-cache database).
IN_MEMORY = "file:billcycle-"


def _sqlite_env(url: str) -> dict[str, str]:
    if not url.startswith("sqlite:///"):
        raise ValueError(f'store URL "{url}" has a host part; {_USAGE} (three slashes)')
    path = unquote(url.removeprefix("sqlite:///"))
    if not path:
        raise ValueError(f'store URL "{url}" has no database path; {_USAGE}')
    if path == ":memory:":
        # A plain ":memory:" is a different empty database on every pooled connection.
        # A named shared-cache database is one database for all of them; the random name
        # keeps each store_env() call's database private, as ":memory:" promises.
        dbname = f"{IN_MEMORY}{uuid4().hex}?mode=memory&cache=shared"
    else:
        # Absolute now, so a later change of working directory cannot move the database.
        dbname = os.path.abspath(path)
    return {
        "PERSISTENCE_MODULE": SQLITE_MODULE,
        "SQLITE_DBNAME": dbname,
        "SQLITE_LOCK_TIMEOUT": LOCK_TIMEOUT_SECONDS,
        "CREATE_TABLE": "y",
    }


def _postgres_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"host"})
    if unknown:
        raise ValueError(
            f'store URL "{redacted(url)}": unknown parameter(s) {", ".join(unknown)}; '
            "only host=/socket/dir is understood"
        )
    host = parts.hostname or query.get("host", [""])[0]
    try:
        port = parts.port or 5432
    except ValueError:  # urllib's "Port could not be cast to integer value"
        raise ValueError(
            f'store URL "{redacted(url)}": the port is not a number; {_USAGE}') from None
    dbname = unquote(parts.path.lstrip("/"))
    if not (parts.username and host and dbname):
        raise ValueError(
            f'store URL "{redacted(url)}" needs a user, a host and a database name; {_USAGE}'
        )
    # Deliberately no POSTGRES_ENABLE_DB_FUNCTIONS: with it the library inserts through a
    # database function that skips tracking, meter and contract writes (the factory refuses it).
    return {
        "PERSISTENCE_MODULE": POSTGRES_MODULE,
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": unquote(parts.username),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_LOCK_TIMEOUT": LOCK_TIMEOUT_SECONDS,
        # A few connections per application; bursts (a consumer, a billing run and
        # projections in one process) borrow up to ten more. No POSTGRES_PRE_PING: it costs
        # a round trip per query, and the library already retries on a dropped connection.
        "POSTGRES_POOL_SIZE": "5",
        "POSTGRES_MAX_OVERFLOW": "10",
        "CREATE_TABLE": "y",
    }


def redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
