"""The endpoint's random tokens (tags, branches, Call-IDs: RFC 3261 §8.1.1.7, §19.3)."""

from __future__ import annotations

from gb28181gw.sip.endpoint import fast_token


def test_fast_token_is_hex_of_the_asked_size() -> None:
    """2 × nbytes lower-case hex digits (the bytes' hex: zero-padded), for any size."""
    token = fast_token()
    for nbytes in (2, 4, 6, 8, 12, 16, 32, 33, 40):
        seen = {token(nbytes) for _ in range(200)}
        assert len(seen) > 190
        for t in seen:
            assert len(t) == 2 * nbytes
            assert set(t) <= set("0123456789abcdef")
    assert all(len(token(1)) == 2 for _ in range(100))
