"""Verified tokens are remembered (a bounded cache) but never past their expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.core import auth
from server.core.auth import InvalidToken, mint_token, verify_token
from tests.support import ManualClock

SECRET = "a-test-secret-long-enough-for-hs256-keys!"


def test_a_remembered_token_still_expires():
    clock = ManualClock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    token = mint_token(SECRET, "acme", "service", "svc", ttl_s=60, clock=clock)
    first = verify_token(SECRET, token, clock)
    assert verify_token(SECRET, token, clock) is first  # the second time from the cache
    clock.advance(timedelta(seconds=61))
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token, clock)


def test_a_remembered_token_is_not_good_for_another_secret_nor_a_tampered_copy():
    clock = ManualClock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    token = mint_token(SECRET, "acme", "service", "svc", clock=clock)
    verify_token(SECRET, token, clock)
    with pytest.raises(InvalidToken):
        verify_token(SECRET + "-rotated", token, clock)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(InvalidToken):
        verify_token(SECRET, tampered, clock)


def test_the_cache_is_bounded():
    clock = ManualClock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    for n in range(auth.VERIFIED_CACHE_SIZE + 50):
        verify_token(SECRET, mint_token(SECRET, "acme", "agent", f"u{n}", clock=clock), clock)
    assert len(auth._verified) == auth.VERIFIED_CACHE_SIZE
