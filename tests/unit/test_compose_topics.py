"""docker-compose.yml creates the topics `./infra/dev up` creates: the same names, the same
partitions, so a developer with Docker gets what one without it gets."""

from __future__ import annotations

import re
from pathlib import Path

from consumers.kafka_source import Topics
from infra.services import KAFKA_PORT, TOPIC_PARTITIONS

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_the_compose_file_creates_billcycles_five_topics_as_infra_dev_up_does() -> None:
    text = COMPOSE.read_text()
    # The one-shot service's loop (read as text: PyYAML is not among billcycle's packages).
    [names] = re.findall(r"for topic in ([^;]+); do", text)
    topics = Topics()
    assert names.split() == [*topics.inbound, topics.invoices, topics.deadletter]
    [create] = re.findall(r"kafka-topics\.sh [^\n]*--create[^\n]*", text)
    assert (f"--bootstrap-server 127.0.0.1:{KAFKA_PORT} --create --if-not-exists --topic "
            f'"$$topic" --partitions {TOPIC_PARTITIONS} --replication-factor 1') in create
    assert "condition: service_healthy" in text  # after the broker answers, not at its start
