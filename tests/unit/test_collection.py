"""A worker's garbage collection: few young collections, no automatic full
one, and a full one on the worker's own schedule (runner/collection.py)."""

from __future__ import annotations

import gc
import time
import weakref

from overnight.runner.collection import NEVER, YOUNG, Collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_a_worker_collects_cycles_on_its_own_schedule_and_puts_the_thresholds_back() -> None:
    before = gc.get_threshold()
    collector = Collector(every=0.2)
    collector.start()
    try:
        assert gc.get_threshold()[0] == YOUNG and gc.get_threshold()[2] == NEVER
        node = Node()
        gone = weakref.ref(node)
        del node
        collector.tick()  # too soon
        assert gone() is not None
        time.sleep(0.25)
        collector.tick()
        assert gone() is None
    finally:
        collector.stop()
    assert gc.get_threshold() == before
