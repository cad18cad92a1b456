"""Rate-limit arithmetic and the invalid-request counter, on a fake clock (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dorch.discord.errors import CloudflareBan, TooManyInvalidRequests
from dorch.discord.invalid_requests import InvalidRequestCounter
from dorch.discord.ratelimit import POLL, RateLimiter, RateLimitInfo
from dorch.shared_state import SharedState

ROUTE = "POST /channels/{channel_id}/messages"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, path: Path | None = None, **kw: int | float) -> RateLimiter:
    return RateLimiter(SharedState(path), clock=clock, **kw)  # type: ignore[arg-type]


def info(limit: int, remaining: int, reset_after: float, bucket: str = "h1", **kw: object) -> RateLimitInfo:
    return RateLimitInfo(limit, remaining, reset_after, bucket, **kw)  # type: ignore[arg-type]


def test_parse_headers() -> None:
    parsed = RateLimitInfo.parse({"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4",
                                  "X-RateLimit-Reset-After": "4.5", "X-RateLimit-Bucket": "abc",
                                  "X-RateLimit-Scope": "user"})
    assert parsed == RateLimitInfo(5, 4, 4.5, "abc", "user", False)
    assert parsed.complete
    assert not RateLimitInfo.parse({"X-RateLimit-Limit": "x"}).complete
    assert RateLimitInfo.parse({"X-RateLimit-Global": "true"}).is_global


def test_unknown_bucket_allows_one_request_until_its_answer() -> None:
    clock = Clock()
    rl = limiter(clock)
    assert rl.try_acquire(ROUTE, "1") == 0
    assert 0 < rl.try_acquire(ROUTE, "1") <= POLL  # provisional: wait for the first answer
    assert rl.try_acquire(ROUTE, "2") == 0  # another major parameter is another bucket
    rl.update(ROUTE, "1", info(5, 4, 5.0))
    for _ in range(4):
        assert rl.try_acquire(ROUTE, "1") == 0
    assert rl.try_acquire(ROUTE, "1") == pytest.approx(5.0)
    clock.now += 5.0
    assert rl.try_acquire(ROUTE, "1") == 0  # a new window


def test_wait_time_tells_when_a_request_could_go_and_reserves_nothing(tmp_path: Path) -> None:
    clock = Clock()
    rl = limiter(clock, tmp_path / "state.json")
    rl.try_acquire(ROUTE, "1")
    rl.update(ROUTE, "1", info(2, 1, 5.0))
    for _ in range(3):  # asking does not use up the last request of the window
        assert rl.wait_time(ROUTE, "1") == 0
    assert rl.try_acquire(ROUTE, "1") == 0
    assert rl.wait_time(ROUTE, "1") == pytest.approx(5.0)
    clock.now += 2.0
    assert rl.wait_time(ROUTE, "1") == pytest.approx(3.0)


def test_answer_without_headers_releases_a_provisional_bucket() -> None:
    rl = limiter(Clock())
    assert rl.try_acquire(ROUTE, "1") == 0
    rl.update(ROUTE, "1", None)  # connection error: nothing learned
    assert rl.try_acquire(ROUTE, "1") == 0


def test_out_of_order_answers_never_loosen_a_bucket() -> None:
    clock = Clock()
    rl = limiter(clock)
    rl.try_acquire(ROUTE, "1")
    rl.update(ROUTE, "1", info(5, 4, 5.0))
    for _ in range(3):
        assert rl.try_acquire(ROUTE, "1") == 0
    # local: 1 left. A late answer of an earlier request says 3 remain: keep the lower count.
    rl.update(ROUTE, "1", info(5, 3, 4.0))
    assert rl.try_acquire(ROUTE, "1") == 0
    assert rl.try_acquire(ROUTE, "1") == pytest.approx(5.0)  # and the later reset


def test_routes_sharing_a_bucket_hash_share_the_budget() -> None:
    clock = Clock()
    rl = limiter(clock)
    add, remove = "PUT /reactions/@me", "DELETE /reactions/@me"
    rl.try_acquire(add, "1")
    rl.update(add, "1", info(1, 0, 0.25, bucket="react"))
    assert rl.try_acquire(remove, "1") == 0  # unknown route: provisional, one try
    rl.update(remove, "1", info(1, 0, 0.25, bucket="react"))
    assert rl.try_acquire(add, "1") == pytest.approx(0.25)
    assert rl.try_acquire(remove, "1") == pytest.approx(0.25)


def test_429_with_remaining_left_blocks_until_retry_after() -> None:
    """A hidden sub-limit: 429 while the headers say requests remain."""
    clock = Clock()
    rl = limiter(clock)
    rl.try_acquire(ROUTE, "1")
    rl.update(ROUTE, "1", info(5, 3, 5.0, scope="user"), status=429, retry_after=2.0)
    assert rl.try_acquire(ROUTE, "1") == pytest.approx(2.0)
    clock.now += 2.0
    assert rl.try_acquire(ROUTE, "1") == 0


def test_a_lost_response_closes_a_bucket_no_longer_than_its_real_window() -> None:
    """The issue's case: after one lost response (reactions: 1 per 0.25 s) every process of
    the bot waited the provisional 10 s before it could react again."""
    clock = Clock()
    rl = limiter(clock)
    react = "PUT /reactions/@me"
    assert rl.try_acquire(react, "1") == 0
    rl.update(react, "1", info(1, 0, 0.25, bucket="react"))
    clock.now += 0.25  # the window is over: a fresh one, whose end no answer told yet
    assert rl.try_acquire(react, "1") == 0
    rl.update(react, "1", None)  # its response was lost: it may have counted
    assert rl.try_acquire(react, "1") > 0
    clock.now += 0.25  # at most the real window later, the bucket is open again
    assert rl.try_acquire(react, "1") == 0


def test_a_first_request_whose_process_died_holds_a_bucket_one_known_window() -> None:
    """kill -9 between a request and its answer: a new channel's bucket of a known route was
    held the provisional 10 s; the route's window (learned on another channel) is enough."""
    clock = Clock()
    rl = limiter(clock)
    assert rl.try_acquire(ROUTE, "1") == 0
    rl.update(ROUTE, "1", info(5, 4, 1.0))
    assert rl.try_acquire(ROUTE, "2") == 0  # provisional: one at a time; then the process dies
    assert rl.try_acquire(ROUTE, "2") > 0
    clock.now += 1.0
    assert rl.try_acquire(ROUTE, "2") == 0


def test_a_shared_429_keeps_what_is_known_of_the_window() -> None:
    """The issue's case: a shared 429 made the bucket reopen as a fresh window after its
    retry_after, forgetting the real one, and a real 429 followed."""
    clock = Clock()
    rl = limiter(clock)
    assert rl.try_acquire(ROUTE, "1") == 0
    rl.update(ROUTE, "1", info(5, 4, 5.0))
    for left in (3, 2):
        assert rl.try_acquire(ROUTE, "1") == 0
        rl.update(ROUTE, "1", info(5, left, 5.0))
    assert rl.try_acquire(ROUTE, "1") == 0
    rl.update(ROUTE, "1", RateLimitInfo(scope="shared"), status=429, retry_after=1.0)
    assert rl.try_acquire(ROUTE, "1") == pytest.approx(1.0)
    clock.now += 1.0
    # the real window (4 s left) still has 2 requests: a shared 429 did not count
    assert rl.try_acquire(ROUTE, "1") == 0
    assert rl.try_acquire(ROUTE, "1") == 0
    assert rl.try_acquire(ROUTE, "1") == pytest.approx(4.0)
    clock.now += 4.0
    assert rl.try_acquire(ROUTE, "1") == 0  # the next real window


def test_global_429_blocks_every_route_of_the_token() -> None:
    clock = Clock()
    rl = limiter(clock)
    rl.try_acquire(ROUTE, "1")
    rl.update(ROUTE, "1", RateLimitInfo(scope="global", is_global=True), status=429, retry_after=1.5)
    assert rl.try_acquire("GET /users/@me", "") == pytest.approx(1.5)
    clock.now += 1.5
    assert rl.try_acquire("GET /users/@me", "") == 0


def test_global_limit_is_enforced_before_sending() -> None:
    clock = Clock()
    rl = limiter(clock, global_limit=3, global_per=1.0)
    for n in range(3):
        assert rl.try_acquire(f"GET /r{n}", "") == 0
    wait = rl.try_acquire("GET /r9", "")
    assert 1.0 < wait <= 1.1  # the window plus a margin for send/arrival skew
    clock.now += wait
    assert rl.try_acquire("GET /r9", "") == 0


def test_two_limiters_on_one_file_share_buckets(tmp_path: Path) -> None:
    """Two processes of one token: the state is the file's, not the object's."""
    clock = Clock()
    a, b = limiter(clock, tmp_path / "rl.json"), limiter(clock, tmp_path / "rl.json")
    a.try_acquire(ROUTE, "1")
    a.update(ROUTE, "1", info(2, 1, 5.0))
    assert b.try_acquire(ROUTE, "1") == 0
    assert a.try_acquire(ROUTE, "1") == pytest.approx(5.0)


def test_damaged_state_file_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "rl.json").write_text("{not json")
    assert limiter(Clock(), tmp_path / "rl.json").try_acquire(ROUTE, "1") == 0


# -- the invalid-request counter ------------------------------------------------------------------

def counter(clock: Clock, path: Path | None = None, limit: int = 100) -> InvalidRequestCounter:
    return InvalidRequestCounter(SharedState(path), limit=limit, clock=clock)


def test_counter_slows_down_from_half_and_refuses_at_the_limit() -> None:
    clock = Clock()
    c = counter(clock)
    c.record(49)
    assert c.delay() == 0
    c.record(1)
    slow = c.delay()
    c.record(40)
    slower = c.delay()
    assert 0 < slow < slower <= 5.0
    c.record(10)
    with pytest.raises(TooManyInvalidRequests) as exc:
        c.delay()
    assert exc.value.count == 100 and 0 < exc.value.retry_after <= 610
    assert "100" in str(exc.value)


def test_counter_window_slides() -> None:
    clock = Clock()
    c = counter(clock)
    c.record(60)
    clock.now += 300
    c.record(30)
    assert c.count() == 90
    clock.now += 320  # the first 60 are older than 10 minutes
    assert c.count() == 30
    assert c.delay() == 0


def test_counter_is_shared_through_the_file(tmp_path: Path) -> None:
    clock = Clock()
    a, b = counter(clock, tmp_path / "inv.json"), counter(clock, tmp_path / "inv.json")
    a.record(3)
    b.record(4)
    assert a.count() == b.count() == 7


def test_a_recorded_ban_refuses_until_it_ends() -> None:
    clock = Clock()
    c = counter(clock)
    c.ban(3600)
    with pytest.raises(CloudflareBan) as exc:
        c.delay()
    assert exc.value.retry_after == pytest.approx(3600)
    clock.now += 3600
    assert c.delay() == 0
