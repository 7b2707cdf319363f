"""A Zammad-compatible helpdesk in memory: the demo's helpdesk and the tests' and benchmarks' fake.

``EmulatorServer`` serves it over HTTP on loopback (see ``server``); ``api``
lists the routes, ``store`` the behaviour copied from Zammad, ``shapes`` the
JSON it answers, ``query`` the search syntax, ``webhooks`` and ``faults`` the
trigger deliveries and the injected failures, ``stats`` the write accounting,
``timings`` when each ticket was created and first marked triaged, ``seed``
the sample data.

Importing this package is cheap: the server (Starlette, uvicorn) loads on
first use of ``EmulatorServer``, so ``helpdesk-triage --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.emulator.server import DEFAULT_PORT, EmulatorServer

DEMO_TOKEN = "demo-triage-token"  # the triage user's token unless configured; demo use only

__all__ = ["DEFAULT_PORT", "DEMO_TOKEN", "EmulatorServer"]


def __getattr__(name: str) -> Any:
    if name in ("EmulatorServer", "DEFAULT_PORT"):
        from connector.emulator import server

        return getattr(server, name)
    raise AttributeError(name)
