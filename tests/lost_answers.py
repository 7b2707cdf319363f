"""Make a helpdesk do a write and the client never hear back: the late-answer fault.

The request really reaches the server (a real one, the emulator or a
``responses`` fake) and takes effect; then the client sees a read timeout, as
when the helpdesk answers after the client's read timeout.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from connector.http import HttpClient


def lose_answers(
    client: HttpClient,
    method: str,
    url_pattern: str,
    *,
    body_contains: str = "",
    times: int = 1,
) -> list[str]:
    """Patch ``client``'s transport so the first ``times`` matching requests lose their answer.

    A request matches by method, a regular expression searched in its URL, and
    a string its body must contain (such as the note's subject).

    Returns the list the lost requests' URLs are appended to.
    """
    transport = client._transport
    original = transport.send
    lost: list[str] = []

    def send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = original(request, **kwargs)
        if (
            len(lost) < times
            and request.method == method
            and re.search(url_pattern, request.url or "")
            and body_contains in _text(request.body)
        ):
            lost.append(request.url or "")
            raise requests.ReadTimeout("read timed out: the helpdesk answered too late")
        return response

    transport.send = send  # type: ignore[method-assign]
    return lost


def _text(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or "")
