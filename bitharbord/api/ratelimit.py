"""Login rate limiting: consecutive failures per key (a client address, an account name); after FREE_FAILURES of
them each further attempt waits 1, 2, 4 ... seconds (at most BACKOFF_CAP_S) after the last failure. And the
bitharbor_logins_total counter."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter

FREE_FAILURES: Final = 5
BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 300.0


@dataclass
class _Strikes:
    failures: int
    last: float


class LoginLimiter:
    """Consecutive failures per key; after `free` of them, exponential backoff from the last failure."""

    def __init__(self, *, free: int = FREE_FAILURES, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base, self.cap, self.max_keys, self.clock = free, base, cap, max_keys, clock
        self._strikes: OrderedDict[str, _Strikes] = OrderedDict()

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        s = self._strikes.get(key)
        if s is None or s.failures < self.free:
            return 0.0
        delay: float = min(self.cap, self.base * 2.0 ** (s.failures - self.free))
        return max(0.0, s.last + delay - self.clock())

    def failure(self, key: str) -> None:
        s = self._strikes.pop(key, None) or _Strikes(0, 0.0)
        s.failures += 1
        s.last = self.clock()
        self._strikes[key] = s  # most recent last
        while len(self._strikes) > self.max_keys:
            self._strikes.popitem(last=False)

    def success(self, key: str) -> None:
        self._strikes.pop(key, None)


# --------------------------------------------------------------------------- the authenticator

_LOGIN_COUNTERS: dict[int, tuple[CollectorRegistry, Counter]] = {}


def login_counter(registry: CollectorRegistry) -> Counter:
    """bitharbor_logins_total{result}: ok, failed, throttled (one per registry: apps may be rebuilt)."""
    found = _LOGIN_COUNTERS.get(id(registry))
    if found is None or found[0] is not registry:
        counter = Counter("bitharbor_logins_total", "Login attempts on /v1/auth/login, by result.", ["result"],
                          registry=registry)
        for result in ("ok", "failed", "throttled"):
            counter.labels(result=result)
        found = _LOGIN_COUNTERS[id(registry)] = (registry, counter)
    return found[1]

