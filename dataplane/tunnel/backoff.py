"""Reconnect delays: exponential with "equal jitter" (half fixed, half random), so that agents
cut off together (a gateway restart) come back spread over a window instead of in one wave,
while each one's delay still grows."""
from __future__ import annotations

import random
from typing import Callable


class Backoff:
    def __init__(self, initial: float = 0.5, maximum: float = 30.0, rng: Callable[[], float] = random.random):
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.attempts = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
