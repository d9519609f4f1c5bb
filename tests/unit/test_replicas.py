"""Replica choice: least outstanding requests, ejection and probing."""

from __future__ import annotations

from overnight.backends.replicas import Replicas


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_least_busy_replica_is_picked() -> None:
    replicas = Replicas(["a", "b", "c"])
    first, second, third = replicas.pick(), replicas.pick(), replicas.pick()
    assert {first.url, second.url, third.url} == {"a", "b", "c"}
    replicas.release(second, healthy=True)
    assert replicas.pick().url == second.url


def test_a_failing_replica_is_ejected_then_probed_back() -> None:
    clock = Clock()
    replicas = Replicas(["a", "b"], eject_after=2, cooldown=5, clock=clock)
    a = next(r for r in replicas.replicas if r.url == "a")
    for _ in range(2):
        a.outstanding += 1
        replicas.release(a, healthy=False)
    assert replicas.healthy_count() == 1
    assert {replicas.pick().url for _ in range(5)} == {"b"}

    clock.now += 5
    probe = replicas.pick()
    while probe.url != "a":
        probe = replicas.pick()
    assert probe.probing
    # While the probe is out, "a" gets nothing else.
    assert {replicas.pick().url for _ in range(3)} == {"b"}
    replicas.release(probe, healthy=False)  # probe failed: out again, twice as long
    assert a.cooldown == 10
    clock.now += 10
    probe = replicas.pick()
    while probe.url != "a":
        probe = replicas.pick()
    replicas.release(probe, healthy=True)
    assert a.ejected_until == 0 and replicas.healthy_count() == 2


def test_with_every_replica_out_the_first_due_back_is_used() -> None:
    clock = Clock()
    replicas = Replicas(["a", "b"], eject_after=1, cooldown=5, clock=clock)
    for replica in list(replicas.replicas):
        replica.outstanding += 1
        replicas.release(replica, healthy=False)
        clock.now += 1
    assert replicas.pick().url == "a"
