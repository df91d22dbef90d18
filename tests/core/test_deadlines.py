"""The shared timer queue."""

from __future__ import annotations

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
