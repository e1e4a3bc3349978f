"""The ingest ETA comes from the stage that bounds it: per-stage rates from successive queue facts, and the ETA
of the stage that finishes last (ingest/eta.py, shown by GET /v1/ingest as eta_s, eta_bound_by and stages)."""

from __future__ import annotations

import pytest

from bitharbord.ingest.eta import StageRates, bound, cleared, remaining

ACTIVE = ("queued", "hashed", "probed", "stored", "cataloged")


def facts(done: int, **waiting: int) -> tuple[dict[str, int], dict[str, int]]:
    """(by_stage, totals) of a journal with `done` finished jobs and `waiting` jobs per active stage."""
    by_stage = {s: waiting.get(s, 0) for s in ACTIVE}
    return by_stage, {**by_stage, "done": done}


def test_remaining_and_cleared_count_each_job_once() -> None:
    by_stage, totals = facts(10, queued=4, hashed=1, cataloged=5)
    assert remaining(by_stage) == {"hash": 4, "probe": 5, "store": 5, "catalog": 5, "preview": 10}
    assert cleared(by_stage, totals) == {"hash": 16, "probe": 15, "store": 15, "catalog": 15, "preview": 10}
    # a new job changes nothing cleared
    more_stage, more_totals = facts(10, queued=5, hashed=1, cataloged=5)
    assert cleared(more_stage, more_totals) == cleared(by_stage, totals)


def test_previews_trailing_bound_the_eta() -> None:
    """Hashing is done; previews clear 0.6 files/s with 1,000 left: the ETA says when the previews finish."""
    rates = StageRates()
    rates.observe(0.0, *facts(0, queued=600, cataloged=1000))
    rates.observe(60.0, *facts(36, cataloged=1564))  # 600 hashed and cataloged in a minute, 36 previewed
    measured = rates.rates()
    assert measured["hash"] == pytest.approx(10.0) and measured["preview"] == pytest.approx(0.6)
    b = bound({"cataloged": 1564}, measured)
    assert b.bound_by == "preview"
    assert b.eta_s == pytest.approx(1564 / 0.6, abs=0.1)
    assert b.stages["preview"] == {"waiting": 1564, "remaining": 1564, "rate_per_s": 0.6,
                                   "eta_s": pytest.approx(1564 / 0.6, abs=0.1)}
    assert b.stages["hash"]["remaining"] == 0 and b.stages["hash"]["eta_s"] is None


def test_the_whole_queue_over_one_rate_would_be_wrong() -> None:
    """Many files still to hash at 10/s, previews keeping up: hash bounds it, not the previews' short queue."""
    by_stage = {"queued": 900, "cataloged": 2}
    b = bound(by_stage, {"hash": 10.0, "probe": 10.0, "store": 10.0, "catalog": 10.0, "preview": 10.0})
    assert b.bound_by == "hash"  # previews are fed as fast as hashing goes: hashing sets the pace
    assert b.eta_s == pytest.approx(90.2)  # the last file still needs its preview after its hash
    slow = bound(by_stage, {"hash": 10.0, "probe": 10.0, "store": 10.0, "catalog": 10.0, "preview": 2.0})
    assert slow.bound_by == "preview" and slow.eta_s == pytest.approx(451.0)


def test_no_eta_until_measured_and_a_stuck_stage_is_named() -> None:
    rates = StageRates()
    assert bound({"queued": 5}, rates.rates()).eta_s is None
    rates.observe(100.0, *facts(0, queued=5))
    rates.observe(101.0, *facts(1, queued=4))  # one second of samples: too short to be a rate
    assert rates.rates()["hash"] is None and bound({"queued": 4}, rates.rates()).eta_s is None
    rates.observe(130.0, *facts(1, queued=4))
    rates.observe(161.0, *facts(1, queued=4))  # nothing cleared for a minute: hash is stuck
    stuck = bound({"queued": 4}, rates.rates())
    assert stuck.eta_s is None and stuck.bound_by == "hash"


def test_rates_cover_the_last_minute_only() -> None:
    rates = StageRates()
    rates.observe(0.0, *facts(0, queued=1000))
    rates.observe(30.0, *facts(300, queued=700))  # 10/s in the first half minute
    rates.observe(90.0, *facts(330, queued=670))  # then 0.5/s
    rates.observe(120.0, *facts(345, queued=655))
    assert rates.rates()["hash"] == pytest.approx((345 - 300) / 90.0)  # from the sample at the window's start
    rates.observe(100.0, *facts(345, queued=655))  # the clock went back: start again
    assert rates.rates()["hash"] is None
