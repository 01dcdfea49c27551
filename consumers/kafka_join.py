"""A group join that kafka-python 3.0.12 can leave unfinished, finished.

`consume` polls with short timeouts until it owns partitions, so a JoinGroup/SyncGroup round
is often still in flight when a poll returns; the next poll is meant to wait for the same
round (`BaseCoordinator._join_task`). But the poll only looks at the round while
`need_rejoin()` holds, and a leader's round can make it false before it ends: a join set off
by changed topic metadata (partitions added, or a topic just created becoming known) stops
being needed once the leader's assignment takes a snapshot of that metadata. The round then
ends unseen: the member stays `rebalancing` with its heartbeats stopped, the broker drops it
after the session timeout, and it never joins again. This is what stalled the test
consumers of a fresh group (`tests/integration/test_kafka_join.py` sets it off in 3 of 5
tries without the fix).

The Java client asks for a join while one is "needed or pending"; `install` makes this
consumer do the same: a round in flight, or ended and not yet taken up, keeps the join going.
A round that ended unseen is then started again (a new JoinGroup from the same member), which
costs one more rebalance and loses nothing.
"""

from __future__ import annotations

from typing import Any

import kafka
from kafka.coordinator.base import BaseCoordinator

SUPPORTED_VERSIONS = ("3.0.12",)


def install(consumer: Any) -> bool:
    """Make `consumer`'s group coordinator finish every join round it starts.

    Returns False (and leaves the consumer as it is) on a kafka-python this was not written
    against, or a consumer without a group.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if (kafka.__version__ not in SUPPORTED_VERSIONS
            or not isinstance(coordinator, BaseCoordinator)
            or not hasattr(coordinator, "_join_task")):
        return False
    needed = coordinator.need_rejoin

    def need_rejoin() -> bool:
        return coordinator._join_task is not None or bool(needed())

    coordinator.need_rejoin = need_rejoin
    coordinator.finishes_join_rounds = True  # see `installed`
    return True


def installed(consumer: Any) -> bool:
    """Whether `install` made this consumer's coordinator finish its join rounds."""
    return getattr(getattr(consumer, "_coordinator", None), "finishes_join_rounds", False)
