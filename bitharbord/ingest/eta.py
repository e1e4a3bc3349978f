"""The ingest ETA from the stage that bounds it: a rate per stage, and when the slowest stage finishes.

A job waits in a journal stage for one piece of work: `queued` for the hash, `hashed` for the probe, `probed`
for the store, `stored` for the catalog, `cataloged` for the previews. For each piece of work:

* remaining: unfinished jobs that still need it (those waiting for it and those upstream of it);
* cleared: every job in the journal minus the remaining ones (done, failed, vanished, or past it), so a new job
  changes nothing and a job that clears a stage, however it does (a duplicate skips the rest), counts once;
* rate: cleared per second over the last minute, from the samples the status board takes (the ticker and
  every status request): `StageRates`;
* ETA: remaining / rate. The queue's ETA is the largest one: the stage that finishes last bounds it. A stage
  that is only fed as fast as the one before it shows about the same ETA; the most upstream stage within
  TIE of the largest ETA is named as the bound (it is the one that sets the pace).

Examples: hashing done, 1,000 previews left at 0.6/s -> ETA 1,667 s bound by `preview`; nothing measured yet
(fewer than MIN_SPAN_S seconds of samples) -> no ETA; a stage with jobs waiting and no progress over the last
minute -> no ETA, bound by that stage (it is stuck).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

WORK: Final = (("queued", "hash"), ("hashed", "probe"), ("probed", "store"), ("stored", "catalog"),
               ("cataloged", "preview"))  # (journal stage a job waits in, the work it waits for)
WINDOW_S: Final = 60.0  # rates over the last minute
MIN_SPAN_S: Final = 2.0  # fewer seconds of samples than this measure no rate
TIE: Final = 0.1  # stages whose ETAs are within 10% of the largest: the most upstream one is named


def remaining(by_stage: Mapping[str, int]) -> dict[str, int]:
    """Per piece of work, the unfinished jobs that still need it."""
    out: dict[str, int] = {}
    left = 0
    for stage, work in WORK:
        left += int(by_stage.get(stage, 0))
        out[work] = left
    return out


def cleared(by_stage: Mapping[str, int], totals: Mapping[str, int]) -> dict[str, int]:
    """Per piece of work, the jobs of the journal that no longer need it."""
    everything = sum(int(n) for n in totals.values())
    return {work: everything - left for work, left in remaining(by_stage).items()}


class StageRates:
    """Samples of `cleared` over time and the rate of each piece of work over the last minute."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def observe(self, t: float, by_stage: Mapping[str, int], totals: Mapping[str, int]) -> None:
        if self.samples and t < self.samples[-1][0]:
            self.samples.clear()  # the clock went back: start again rather than report nonsense
        self.samples.append((t, cleared(by_stage, totals)))
        # keep one sample at or before the window's start so the rate covers a whole minute once it can
        while len(self.samples) > 2 and self.samples[1][0] <= t - WINDOW_S:
            self.samples.popleft()

    def rates(self) -> dict[str, float | None]:
        """Per piece of work, jobs cleared per second (None: not measured yet)."""
        if len(self.samples) < 2:
            return {work: None for _, work in WORK}
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        span = t1 - t0
        if span < MIN_SPAN_S:
            return {work: None for _, work in WORK}
        return {work: max(0, last[work] - first[work]) / span for _, work in WORK}


@dataclass(frozen=True, slots=True)
class Bound:
    eta_s: float | None
    bound_by: str | None  # the piece of work that finishes last (None: nothing left, or nothing measured)
    stages: dict[str, dict[str, Any]]  # work -> waiting, remaining, rate_per_s, eta_s


def bound(by_stage: Mapping[str, int], rates: Mapping[str, float | None]) -> Bound:
    """The queue's ETA from the stage that bounds it (see the module's text)."""
    left = remaining(by_stage)
    stages: dict[str, dict[str, Any]] = {}
    etas: list[tuple[str, float]] = []
    stuck: str | None = None
    unmeasured = False
    for stage, work in WORK:
        rate = rates.get(work)
        eta: float | None = None
        if left[work] and rate:
            eta = round(left[work] / rate, 1)
            etas.append((work, eta))
        elif left[work] and rate is None:
            unmeasured = True
        elif left[work] and by_stage.get(stage, 0) and stuck is None:
            stuck = work  # jobs wait for it and none cleared it in the last minute
        stages[work] = {"waiting": int(by_stage.get(stage, 0)), "remaining": left[work],
                        "rate_per_s": None if rate is None else round(rate, 3), "eta_s": eta}
    if stuck is not None:
        return Bound(None, stuck, stages)
    if unmeasured or not etas:
        return Bound(None, None, stages)
    longest = max(eta for _, eta in etas)
    named = next(work for work, eta in etas if eta >= longest * (1 - TIE))
    return Bound(longest, named, stages)
