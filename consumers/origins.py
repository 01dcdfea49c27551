"""How a Kafka record is named as the origin of a message: source "kafka:<topic>/<partition>",
position "offset <n>" (dead letters, receipts and the dead-letter topic all read them back)."""

KAFKA_SOURCE_PREFIX = "kafka:"
OFFSET_PREFIX = "offset "
