"""The shared timer queue."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181gw.deadlines import TimerQueue


def test_order_across_buckets_and_cancellation() -> None:
    q: TimerQueue[str] = TimerQueue()
    assert q.next_deadline() is None
    q.schedule(0.0, 32.0, "j1")
    q.schedule(0.0, 0.5, "e1")
    late = q.schedule(1.0, 0.5, "e2")
    q.schedule(2.0, 32.0, "j2")
    assert q.next_deadline() == 0.5
    late.cancel()
    assert list(q.pop_due(1.6)) == ["e1"]
    assert q.next_deadline() == 32.0
    assert list(q.pop_due(40.0)) == ["j1", "j2"]
    assert q.next_deadline() is None and len(q) == 0


def test_items_scheduled_while_popping_are_seen_when_due() -> None:
    q: TimerQueue[int] = TimerQueue()
    q.schedule(0.0, 1.0, 1)
    seen = []
    for item in q.pop_due(5.0):
        seen.append(item)
        if item < 3:
            q.schedule(1.0, 1.0, item + 1)
    assert seen == [1, 2, 3]


@settings(max_examples=300, deadline=None)
@given(
    resolution=st.sampled_from([0.001, 0.1, 1.0]),
    plan=st.lists(
        # (time since the last schedule, a common delay, a fraction of the resolution added to it):
        # the delays of one bucket then differ by up to a resolution, as remainders of times do
        st.tuples(st.floats(0.0, 0.6), st.sampled_from([0.5, 30.0, 90.0]), st.floats(-0.49, 0.49)),
        min_size=1,
        max_size=60,
    ),
)
def test_an_entry_fires_never_early_and_at_most_one_resolution_late(
    resolution: float, plan: list[tuple[float, float, float]]
) -> None:
    # A bucket holds delays within a resolution of each other in the order they were scheduled,
    # so an entry can wait behind an earlier-scheduled one due up to a resolution after it.
    q: TimerQueue[int] = TimerQueue(resolution=resolution)
    due: dict[int, float] = {}
    fired: dict[int, float] = {}
    now = 0.0

    def run_until(t: float) -> None:
        while (nxt := q.next_deadline()) is not None and nxt <= t:
            for item in q.pop_due(nxt):
                fired[item] = nxt

    for i, (gap, common, jitter) in enumerate(plan):
        run_until(now + gap)
        now += gap
        due[i] = q.schedule(now, common + jitter * resolution, i).when
    run_until(float("inf"))
    assert fired.keys() == due.keys()
    for i, t in fired.items():
        assert due[i] <= t <= due[i] + resolution + 1e-9, (i, due[i], t)
