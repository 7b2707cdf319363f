"""Owner assignment: the least-loaded or the next agent of a queue.

Agent lists and their loads come from the helpdesk and are cached for a short
while, so assigning a burst of tickets costs one lookup per queue, not one per
ticket. Between refreshes, tickets assigned here count towards the load, so a
burst is spread instead of piling onto the agent who was idle a minute ago.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from connector.config import OwnerSettings
from connector.domain import Agent


class OwnerPicker:
    def __init__(
        self,
        settings: OwnerSettings,
        fetch_agents: Callable[[str], list[Agent]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._fetch = fetch_agents
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[Agent]]] = {}
        self._assigned: dict[tuple[str, str], int] = {}
        self._rotation: dict[str, itertools.count[int]] = {}

    def __call__(self, queue: str) -> Agent | None:
        agents = [a for a in self._agents(queue) if a.login not in self.settings.exclude]
        if not agents:
            return None
        with self._lock:
            if self.settings.strategy == "round_robin":
                turn = next(self._rotation.setdefault(queue, itertools.count()))
                chosen = sorted(agents, key=lambda a: a.login)[turn % len(agents)]
            else:
                chosen = min(
                    agents,
                    key=lambda a: (a.open_tickets + self._assigned.get((queue, a.id), 0), a.login),
                )
            key = (queue, chosen.id)
            self._assigned[key] = self._assigned.get(key, 0) + 1
            return chosen

    def _agents(self, queue: str) -> list[Agent]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(queue)
            if cached and now - cached[0] < self.settings.cache_seconds:
                return cached[1]
        agents = self._fetch(queue)
        with self._lock:
            self._cache[queue] = (now, agents)
            # Fresh loads include what was assigned since the last look.
            for key in [k for k in self._assigned if k[0] == queue]:
                del self._assigned[key]
        return agents
