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


# -- prefix affinity: consistent hashing with bounded loads


def _affinity_counts(replicas: Replicas, keys: range) -> dict[int, str]:
    chosen: dict[int, str] = {}
    for key in keys:
        replica = replicas.pick(key)
        chosen[key] = replica.url
        replicas.release(replica, healthy=True)
    return chosen


def test_one_prefix_goes_to_one_replica_and_prefixes_spread() -> None:
    replicas = Replicas(["a", "b", "c", "d"])
    first = _affinity_counts(replicas, range(400))
    assert _affinity_counts(Replicas(["a", "b", "c", "d"]), range(400)) == first  # stable
    assert _affinity_counts(replicas, range(400)) == first
    share = {url: sum(1 for u in first.values() if u == url) for url in "abcd"}
    assert all(60 <= n <= 140 for n in share.values()), share


def test_a_replica_leaving_moves_only_its_own_prefixes() -> None:
    clock = Clock()
    replicas = Replicas(["a", "b", "c", "d"], eject_after=1, cooldown=5, clock=clock)
    before = _affinity_counts(replicas, range(400))
    c = next(r for r in replicas.replicas if r.url == "c")
    c.outstanding += 1
    replicas.release(c, healthy=False)  # c is out for a while
    after = _affinity_counts(replicas, range(400))
    assert "c" not in after.values()
    moved = [key for key in before if before[key] != after[key]]
    assert moved and all(before[key] == "c" for key in moved)


def test_a_saturated_replica_sends_its_prefix_on_to_the_next_in_its_order() -> None:
    replicas = Replicas(["a", "b", "c", "d"], load_factor=1.25)
    key = 12345
    home = replicas.pick(key)
    held = [home]
    # The same prefix keeps coming while nothing finishes: its replica takes
    # its bounded share, then the overflow goes on down the key's order,
    # each replica taking up to its share.
    for _ in range(15):
        held.append(replicas.pick(key))
    loads = {r.url: r.outstanding for r in replicas.replicas}
    assert sum(loads.values()) == 16
    assert loads[home.url] == 5  # its share: ceil(1.25 * 16 / 4)
    assert sorted(loads.values()) == [1, 5, 5, 5], loads  # the last in order, the rest
    # The overflow takes the same path each time: the second replica fills first.
    again = Replicas(["a", "b", "c", "d"], load_factor=1.25)
    first_two = [again.pick(key).url for _ in range(2)]
    assert first_two[0] == home.url and first_two[1] != home.url
    for replica in held:
        replicas.release(replica, healthy=True)
    assert replicas.pick(key) is home  # room again: back to its replica


def test_when_every_replica_is_at_its_share_the_least_busy_takes_it() -> None:
    replicas = Replicas(["a", "b"], load_factor=1.0)
    a, b = replicas.replicas
    a.outstanding, b.outstanding = 3, 2
    # share = ceil(1.0 * 6 / 2) = 3: "a" is full; "b" has room whatever the key.
    assert {replicas.pick(key).url for key in range(2)} == {"b"}
    a.outstanding, b.outstanding = 3, 3  # share 4: both have room, each key its own
    assert {replicas.pick(key).url for key in range(40)} == {"a", "b"}


def test_without_affinity_the_choice_is_least_outstanding() -> None:
    replicas = Replicas(["a", "b"])
    a = replicas.pick()
    b = replicas.pick()
    assert {a.url, b.url} == {"a", "b"}
