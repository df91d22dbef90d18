"""Liveness deadlines (GB/T 28181 §9.6)."""

from __future__ import annotations

from gb28181gw.gb.keepalive import Liveness, keepalive_timeout


def test_defaults_guard_against_missing_values() -> None:
    assert keepalive_timeout(0, 0) == 180.0
    assert keepalive_timeout(30, 2) == 60.0


def test_touch_moves_the_deadline_and_due_reports_once() -> None:
    live = Liveness()
    live.touch("a", 0.0, 180.0)
    live.touch("b", 0.0, 180.0)
    live.touch("a", 100.0, 180.0)  # keepalive: a's deadline moves to 280
    assert live.next_deadline() == 180.0
    assert live.due(179.0) == []
    assert live.due(181.0) == ["b"]
    assert live.deadline("a") == 280.0
    assert live.due(281.0) == ["a"]
    assert live.due(1000.0) == [] and len(live) == 0


def test_forget() -> None:
    live = Liveness()
    live.touch("a", 0.0, 10.0)
    live.forget("a")
    assert live.due(100.0) == [] and live.next_deadline() is None
