"""The local Request Tracker the live tests run against, and an admin client to seed it.

``.ci/rt-setup.sh`` installs and starts RT on loopback and writes what the tests
need to ``.ci/rt/rt.env``. Environment variables of the same names override the
file (``TRIAGE_TEST_RT_ENV_FILE`` names another file):

    TRIAGE_TEST_RT_URL, TRIAGE_TEST_RT_TOKEN, TRIAGE_TEST_RT_USER,
    TRIAGE_TEST_RT_ADMIN_USER, TRIAGE_TEST_RT_ADMIN_PASSWORD,
    TRIAGE_TEST_RT_READONLY_USER, TRIAGE_TEST_RT_READONLY_PASSWORD,
    TRIAGE_TEST_RT_QUEUES, TRIAGE_TEST_RT_AGENTS,
    TRIAGE_TEST_RT_MARKER_FIELD, TRIAGE_TEST_RT_TAGS_FIELD

Without a server the tests skip with the reason, except under CI (the ``CI``
variable is set), where a missing server is a failure: CI starts one.
"""

from __future__ import annotations

import email.message
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ENV_FILE = REPO / ".ci" / "rt" / "rt.env"
PREFIX = "TRIAGE_TEST_RT_"
SETUP_HINT = "start one with `sudo .ci/rt-setup.sh` (Debian/Ubuntu, a few minutes)"


@dataclass(frozen=True)
class RTServer:
    """Where the server is and who may do what on it."""

    url: str
    token: str
    user: str
    admin_user: str
    admin_password: str
    readonly_user: str
    readonly_password: str
    queues: tuple[str, ...]
    agents: tuple[str, ...]
    marker_field: str
    tags_field: str

    @property
    def api(self) -> str:
        return self.url.rstrip("/") + "/REST/2.0"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY='value' lines as written by rt-setup.sh (shell syntax, one per line)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values


def load_settings(environ: Mapping[str, str] = os.environ) -> tuple[RTServer | None, str]:
    """The server's settings, or None and why not."""
    env_file = Path(environ.get(PREFIX + "ENV_FILE", str(DEFAULT_ENV_FILE)))
    values: dict[str, str] = read_env_file(env_file) if env_file.is_file() else {}
    values.update({k: v for k, v in environ.items() if k.startswith(PREFIX)})
    if not values.get(PREFIX + "URL") or not values.get(PREFIX + "TOKEN"):
        return None, f"no {PREFIX}URL/{PREFIX}TOKEN and no {env_file}"

    def get(name: str, default: str = "") -> str:
        return values.get(PREFIX + name, default)

    def listed(name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in get(name).split(",") if part.strip())

    server = RTServer(
        url=get("URL"),
        token=get("TOKEN"),
        user=get("USER", "triage-bot"),
        admin_user=get("ADMIN_USER", "root"),
        admin_password=get("ADMIN_PASSWORD"),
        readonly_user=get("READONLY_USER"),
        readonly_password=get("READONLY_PASSWORD"),
        queues=listed("QUEUES"),
        agents=listed("AGENTS"),
        marker_field=get("MARKER_FIELD", "AI Triage"),
        tags_field=get("TAGS_FIELD", "AI Labels"),
    )
    if len(server.queues) < 2 or not server.agents:
        return None, f"{PREFIX}QUEUES needs two queues and {PREFIX}AGENTS one agent"
    return server, ""


def reachable(server: RTServer) -> str:
    """Empty when REST2 answers the token; else what went wrong."""
    try:
        response = requests.get(
            server.api + "/rt",
            headers={"Authorization": f"token {server.token}"},
            timeout=5,
        )
    except requests.RequestException as error:
        return f"{server.url} does not answer ({type(error).__name__})"
    if response.status_code != 200:
        return f"{server.url}/REST/2.0/rt answered {response.status_code} to the token"
    return ""


def require_server() -> RTServer:
    """The server, or a skip (a failure under CI) that says why and how to get one."""
    server, problem = load_settings()
    if server is not None:
        problem = reachable(server)
    if server is None or problem:
        message = f"Request Tracker is not available: {problem}; {SETUP_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must start Request Tracker before the tests. {message}", pytrace=False)
        pytest.skip(f"SKIPPED LIVE RT TESTS. {message}")
    assert server is not None
    return server


class RTAdmin:
    """Seeds and inspects the server as its admin, through REST2 (never via the adapter)."""

    def __init__(self, server: RTServer) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.auth = (server.admin_user, server.admin_password)
        self.session.trust_env = False
        self.created: list[int] = []

    def close(self) -> None:
        """Resolve the tickets made here (they leave the searches of later runs), then close."""
        for ticket_id in self.created:
            self.put(f"/ticket/{ticket_id}", {"Status": "resolved"})
        self.session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, self.server.api + path, timeout=30, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path} answered {response.status_code}")
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params).json()

    def put(self, path: str, body: Mapping[str, Any]) -> list[str]:
        data = self._call("PUT", path, json=dict(body)).json()
        return [str(message) for message in data]

    def create_ticket(
        self,
        *,
        queue: str,
        subject: str,
        content: str = "",
        content_type: str = "text/plain",
        **fields: Any,
    ) -> int:
        body: dict[str, Any] = {"Queue": queue, "Subject": subject, **fields}
        if content:
            body.update(Content=content, ContentType=content_type)
        data = self._call("POST", "/ticket", json=body).json()
        self.created.append(int(data["id"]))
        return int(data["id"])

    def mail_ticket(self, queue: str, message: email.message.EmailMessage) -> int:
        """A ticket opened by e-mail through RT's mail gateway: real MIME, as customers send it."""
        response = self.session.post(
            self.server.url.rstrip("/") + "/REST/1.0/NoAuth/mail-gateway",
            data={"queue": queue, "action": "correspond", "message": message.as_string()},
            timeout=30,
        )
        if response.status_code != 200 or not response.text.startswith("ok"):
            raise AssertionError(f"mail gateway refused the message ({response.status_code})")
        # The gateway answers "ok" without the id: find the ticket by its subject.
        subject = str(message["Subject"])
        found = self.get(
            "/tickets",
            query=f"Subject = '{subject}'",
            orderby="id",
            order="DESC",
            per_page=1,
        )
        ticket_id = int(found["items"][0]["id"])
        self.created.append(ticket_id)
        return ticket_id

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.get(f"/ticket/{ticket_id}", **{"fields[Queue]": "Name"})
        return data

    def custom_field(self, ticket_id: int, name: str) -> list[str]:
        for field in self.ticket(ticket_id).get("CustomFields", []):
            if field.get("name") == name:
                return [str(value) for value in field.get("values", [])]
        raise AssertionError(f"custom field {name!r} does not apply to ticket {ticket_id}")

    def set_custom_field(self, ticket_id: int, name: str, value: str | list[str] | None) -> None:
        self.put(f"/ticket/{ticket_id}", {"CustomFields": {name: value}})

    def transactions(self, ticket_id: int) -> list[dict[str, Any]]:
        data = self.get(
            f"/ticket/{ticket_id}/history", fields="Type,Creator", per_page=100, orderby="id"
        )
        items: list[dict[str, Any]] = data["items"]
        return items

    def transaction_text(self, transaction_id: int) -> str:
        data = self.get(
            f"/transaction/{transaction_id}/attachments", fields="ContentType,Content,Subject"
        )
        return "\n".join(
            f"{item.get('Subject', '')}\n{item.get('Content', '')}" for item in data["items"]
        )
