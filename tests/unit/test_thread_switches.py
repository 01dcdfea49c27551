"""While consuming, the interpreter lock changes hands every millisecond; afterwards, as before
(tests run commands in process)."""

import sys

from infra.cli_kafka import _prompt_thread_switches


def test_the_switch_interval_is_short_while_consuming_and_put_back_after() -> None:
    before = sys.getswitchinterval()
    with _prompt_thread_switches():
        assert sys.getswitchinterval() == 0.001
    assert sys.getswitchinterval() == before
