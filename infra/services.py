"""Development services: PostgreSQL and Kafka under <repo>/.local, on fixed ports.

    python -m infra.services up|down|status [--purge]   (infra/dev wraps this)

They keep their data between `down` and `up`; `down --purge` deletes it. The ports are the
ones docker-compose.yml publishes, so either way the same settings work. `up` creates
billcycle's five topics under their default names where they do not exist yet: billcycle
never has the broker create a topic (docs/kafka.md).
"""

from __future__ import annotations

import argparse
import sys

from infra.kafka_broker import LocalKafka
from infra.launcher import ServiceError, local_dir
from infra.postgres import LocalPostgres

PG_PORT = 55432
TOPIC_PARTITIONS = 3  # as the broker's num.partitions would give an auto-created topic
KAFKA_PORT = 59092
KAFKA_CONTROLLER_PORT = 59093


def dev_postgres() -> LocalPostgres:
    return LocalPostgres(local_dir() / "postgres", PG_PORT, keep_data=True)


def dev_kafka() -> LocalKafka:
    return LocalKafka(
        local_dir() / "kafka", KAFKA_PORT, KAFKA_CONTROLLER_PORT, keep_data=True, detach=True
    )


def settings(pg: LocalPostgres, kafka: LocalKafka) -> str:
    """Shell lines that point billcycle at the dev services."""
    return f"export BILLCYCLE_DB={pg.url}\nexport BILLCYCLE_KAFKA={kafka.bootstrap}"


def up() -> None:
    pg, kafka = dev_postgres(), dev_kafka()
    if pg.is_running():
        print(f"postgres: already running on port {pg.port}", file=sys.stderr)
    else:
        pg.start()
        print(f"postgres: started on port {pg.port} ({pg.data_dir})", file=sys.stderr)
    if kafka.is_running():
        print(f"kafka: already running on {kafka.bootstrap}", file=sys.stderr)
    else:
        kafka.start()
        print(f"kafka: started on {kafka.bootstrap} (log {kafka.server_log})", file=sys.stderr)
    created = create_topics(kafka.bootstrap)
    if created:
        print(f"kafka: created the topics {', '.join(created)}", file=sys.stderr)
    print(settings(pg, kafka))


def create_topics(bootstrap: str) -> list[str]:
    """billcycle's topics under their default names, those that do not exist yet."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from consumers.kafka_source import Topics

    topics = Topics()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        missing = [name for name in (*topics.inbound, topics.invoices, topics.deadletter)
                   if name not in set(admin.list_topics())]
        if missing:
            admin.create_topics([NewTopic(name, TOPIC_PARTITIONS, 1) for name in missing])
        return missing
    finally:
        admin.close()


def down(purge: bool) -> None:
    for service in (dev_kafka(), dev_postgres()):
        service.keep_data = not purge
        service.stop()
        print(f"{service.base_dir.name}: stopped", file=sys.stderr)


def status() -> int:
    """Print each service's state; exit code 0 only when both run."""
    pg, kafka = dev_postgres(), dev_kafka()
    running = {"postgres": pg.is_running(), "kafka": kafka.is_running()}
    print(f"postgres: {'running' if running['postgres'] else 'stopped'} ({pg.url})")
    print(f"kafka: {'running' if running['kafka'] else 'stopped'} ({kafka.bootstrap})")
    return 0 if all(running.values()) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/dev", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--purge", action="store_true", help="with down: delete the data too")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down(args.purge)
        else:
            return status()
    except ServiceError as error:
        print(f"infra/dev {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
