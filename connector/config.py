"""All configuration, validated once at start-up: the only reader of the environment.

Sources, strongest first: keyword arguments, environment variables
(``TRIAGE_`` prefix, ``__`` between nested names, e.g.
``TRIAGE_ZAMMAD__URL``), then a YAML file (``--config`` or
``TRIAGE_CONFIG_FILE``). A secret may also come from a mounted file: every
secret field ``x`` has a companion ``x_file`` (``TRIAGE_ZAMMAD__TOKEN_FILE``).
A wrong value fails start-up with a message that names the field.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from connector.errors import ConfigError

ENV_PREFIX = "TRIAGE_"
CONFIG_FILE_ENV = "TRIAGE_CONFIG_FILE"
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "model"


class Section(BaseModel):
    """A settings group: unknown keys are errors, and ``x_file`` fills secret ``x``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        resolved = dict(data)
        for key, value in data.items():
            if not key.endswith("_file") or value in (None, ""):
                continue
            target = key[: -len("_file")]
            field = cls.model_fields.get(target)
            if field is None or "SecretStr" not in str(field.annotation):
                continue
            path = Path(str(value))
            try:
                resolved[target] = path.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ValueError(f"{key}: cannot read {path}: {error.strerror}") from None
            del resolved[key]
        return resolved


class HelpdeskKind(StrEnum):
    ZAMMAD = "zammad"
    ZNUNY = "znuny"
    RT = "rt"


class CircuitSettings(Section):
    """The circuit breaker: when the helpdesk as a whole counts as down."""

    failure_threshold: int = Field(5, ge=1, le=1000)
    """Consecutive failed helpdesk calls (connection errors, timeouts, 5xx) that open the circuit;
    while it is open, calls are not sent, readiness fails and tickets wait without using up their
    attempts.
    """
    open_seconds: float = Field(5.0, gt=0, le=3600)
    """Cool-down after the circuit opens, before one call probes the helpdesk again."""
    open_max_seconds: float = Field(60.0, gt=0, le=3600)
    """Longest cool-down; each failed probe doubles it up to this."""

    @model_validator(mode="after")
    def _ordered(self) -> CircuitSettings:
        if self.open_max_seconds < self.open_seconds:
            raise ValueError(
                f"open_max_seconds ({self.open_max_seconds}) must not be below "
                f"open_seconds ({self.open_seconds})"
            )
        return self


class HttpSettings(Section):
    """How the sidecar talks to the helpdesk: timeouts, retries, TLS."""

    connect_timeout_seconds: float = Field(3.05, gt=0, le=60)
    """Seconds to wait for a TCP connection to the helpdesk."""
    read_timeout_seconds: float = Field(10.0, gt=0, le=300)
    """Seconds to wait for the helpdesk's answer once connected."""
    retry_attempts: int = Field(4, ge=1, le=20)
    """Attempts per call, the first included, for retryable errors (429, 502-504, timeouts,
    resets).
    """
    retry_total_seconds: float = Field(30.0, gt=0, le=600)
    """Upper bound on the time one call may spend retrying."""
    retry_backoff_initial_seconds: float = Field(0.25, gt=0, le=60)
    """First backoff; later ones grow exponentially, with jitter."""
    retry_backoff_max_seconds: float = Field(8.0, gt=0, le=300)
    """Longest single backoff."""
    retry_after_max_seconds: float = Field(30.0, ge=0, le=3600)
    """Longest Retry-After honoured inside a call; longer ones requeue the ticket instead."""
    write_settle_seconds: float = Field(30.0, ge=0, le=3600)
    """After a write-back the helpdesk did not answer (read timeout, dropped connection,
    gateway error), how long to wait before reading the ticket back and writing only what
    is missing. Longer than the helpdesk takes to finish a request the client gave up on."""
    verify_tls: bool = True
    """Verify the helpdesk's TLS certificate."""
    ca_bundle: Path | None = None
    """A CA bundle file to verify the helpdesk's certificate with (private CAs)."""
    pool_size: int = Field(16, ge=1, le=256)
    """Keep-alive connections kept open to the helpdesk; raised to ingest.concurrency + 4."""
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    """The circuit breaker around every helpdesk call."""


class MarkerSettings(Section):
    """Names of what triage records on a ticket (tags in Zammad, field values elsewhere)."""

    triaged_tag: str = "ai-triaged"
    """Tag (Zammad) that marks a ticket as triaged; field-based helpdesks store the marker in their
    marker field.
    """
    review_tag: str = "needs-review"
    """Tag added when the model was unsure and a person should look."""
    error_tag: str = "triage-error"
    """Tag added when triage gave up on a ticket after repeated errors."""
    retriage_tag: str = "retriage"
    """Tag an admin adds to have a ticket triaged again (Znuny/RT: set the marker field to
    `retriage`).
    """
    claim_prefix: str = "ai-triage-run:"
    """Prefix of the claim tag a run writes before it changes anything."""
    label_tag_prefix: str = "ai:"
    """Prefix of label tags such as `ai:queue:billing` and `ai:suggest:priority:high`."""
    claim_ttl_seconds: float = Field(300.0, gt=0)
    """After this long a claim is taken to belong to a run that died, and the run is resumed."""

    @field_validator("triaged_tag", "review_tag", "error_tag", "retriage_tag", "claim_prefix")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or "," in value:
            raise ValueError("must be non-empty and contain no comma")
        return value.strip()


class ZammadSettings(Section):
    """Zammad REST API v1. Give ``token`` (preferred) or ``username`` + ``password``."""

    url: str = "http://127.0.0.1:8765"
    """Zammad's base URL (without /api/v1)."""
    token: SecretStr | None = None
    """Personal access token of the triage user (needs ticket.agent on the routed groups)."""
    username: str | None = None
    """Login for HTTP basic auth, when no token is used."""
    password: SecretStr | None = None
    """Password for HTTP basic auth."""
    webhook_secret: SecretStr | None = None
    """The signature token set on the Zammad webhook (X-Hub-Signature HMAC-SHA1)."""
    require_webhook_signature: bool = True
    """Reject webhook deliveries without a signature."""
    open_states: list[str] = Field(default_factory=lambda: ["new", "open"])
    """Ticket states that are still to be worked on, and so to be triaged."""
    shared_drafts: bool = True
    """Write draft replies as shared drafts where the group allows them."""
    owner_without_access: Literal["keep_queue", "move"] = "keep_queue"
    """When the model picks a group the ticket's owner has no full access to, Zammad would
    unassign them on the move: keep_queue leaves the ticket in its group, move moves it
    (and Zammad unassigns the owner); the note says which, and a metric counts it."""
    use_search: bool = True
    """Use the search API (needs Elasticsearch); off lists tickets by page instead."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class ZnunyRoutes(Section):
    """Routes of the GenericTicketConnectorREST web service (as shipped by default)."""

    session_create: str = "/Session"
    """Route of SessionCreate."""
    ticket_get: str = "/Ticket/{id}"
    """Route of TicketGet; `{id}` is the ticket id."""
    ticket_search: str = "/Ticket"
    """Route of TicketSearch."""
    ticket_search_method: Literal["GET", "POST"] = "GET"
    """HTTP method of the TicketSearch route; POST allows the dynamic-field filter."""
    ticket_update: str = "/Ticket/{id}"
    """Route of TicketUpdate; `{id}` is the ticket id."""
    ticket_update_method: Literal["PATCH", "PUT", "POST"] = "PATCH"
    """HTTP method of the TicketUpdate route."""


class ZnunySettings(Section):
    """Znuny / OTRS 6 / OTOBO via the GenericTicketConnectorREST web service."""

    url: str = "http://127.0.0.1/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
    """Base URL of the web service, up to and including its name."""
    username: str = "triage"
    """UserLogin of the triage agent."""
    password: SecretStr | None = None
    """Password of the triage agent."""
    use_session: bool = True
    """Log in once with SessionCreate instead of sending the password with every call."""
    routes: ZnunyRoutes = Field(default_factory=ZnunyRoutes)
    """The web service's routes, when they differ from the shipped definition."""
    marker_field: str = "AITriage"
    """Name of the text dynamic field that holds the triage marker."""
    tags_field: str | None = None
    """Name of a multiselect dynamic field for label tags (none: tags are skipped)."""
    open_state_types: list[str] = Field(default_factory=lambda: ["new", "open"])
    """State types to triage."""
    queues: list[str] = Field(default_factory=list)
    """Queue names tickets may be routed to (the web service cannot list them)."""
    priorities: list[str] = Field(
        default_factory=lambda: ["1 very low", "2 low", "3 normal", "4 high", "5 very high"]
    )
    """Priority names (the web service cannot list them)."""
    server_time_zone: str = "UTC"
    """Time zone of the Znuny server, for its local time stamps."""
    webhook_secret: SecretStr | None = None
    """Shared secret the invoker sends with each call."""
    webhook_secret_header: str = "X-Triage-Secret"
    """Header that carries the shared secret."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class RTSettings(Section):
    """Request Tracker 5 REST2. Give ``token`` (preferred) or ``username`` + ``password``."""

    url: str = "http://127.0.0.1:8080"
    """RT's base URL (without /REST/2.0)."""
    token: SecretStr | None = None
    """Auth token of the triage user."""
    username: str | None = None
    """Login for HTTP basic auth, when no token is used."""
    password: SecretStr | None = None
    """Password for HTTP basic auth."""
    marker_field: str = "AI Triage"
    """Name of the custom field that holds the triage marker."""
    tags_field: str | None = None
    """Name of a multi-value custom field for label tags (none: tags are skipped)."""
    active_statuses: list[str] = Field(default_factory=lambda: ["new", "open", "stalled"])
    """Statuses to triage."""
    # RT stores priorities as numbers; these are the named levels triage reads and writes.
    priority_levels: dict[str, int] = Field(
        default_factory=lambda: {"Low": 0, "Medium": 50, "High": 100}
    )
    """Named priority levels and the numbers RT stores for them."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("priority_levels")
    @classmethod
    def _levels(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("needs at least one level")
        for name, number in value.items():
            if not 0 <= number <= 255:
                raise ValueError(f"{name}: RT priorities are 0-255, got {number}")
        return value


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class ModelSettings(Section):
    """Which model to load and how much CPU to give it."""

    path: Path = BUNDLED_MODEL
    """Directory of the model (model.onnx, tokenizer.json, labels.json, manifest.json)."""
    # None: the container's CPU limit (cgroup quota), else the CPUs this process may use.
    threads: int | None = Field(None, ge=1, le=64)
    """Inference threads; unset: the container's CPU limit."""
    max_batch: int = Field(64, ge=1, le=1024)
    """Most tickets per inference batch."""
    spin_wait: bool = False
    """Let idle inference threads spin: about 10 % more bulk throughput for far more idle CPU."""
    reload_check_seconds: float = Field(30.0, ge=0, le=86400)
    """How often to look for a changed model in ``path`` and reload it; 0: only on SIGHUP."""


class ClassThresholds(Section):
    apply: float | None = Field(None, ge=0, le=1)
    """Apply threshold for this label."""
    suggest: float | None = Field(None, ge=0, le=1)
    """Suggest threshold for this label."""


class HeadPolicy(Section):
    """Thresholds of one head: apply at or above ``apply``, suggest at or above ``suggest``."""

    enabled: bool = True
    """Use this head's prediction at all."""
    apply: float = Field(0.8, ge=0, le=1)
    """Confidence at or above which the prediction is applied."""
    suggest: float = Field(0.5, ge=0, le=1)
    """Confidence at or above which the prediction is suggested (tag and note only)."""
    # Whether a prediction below both thresholds puts the ticket up for human review.
    review_when_unsure: bool = True
    """Below both thresholds, put the ticket up for review."""
    classes: dict[str, ClassThresholds] = Field(default_factory=dict)
    """Per-label thresholds that override the head's."""

    @model_validator(mode="after")
    def _ordered(self) -> HeadPolicy:
        if self.suggest > self.apply:
            raise ValueError(f"suggest ({self.suggest}) must not exceed apply ({self.apply})")
        for label, override in self.classes.items():
            apply = override.apply if override.apply is not None else self.apply
            suggest = override.suggest if override.suggest is not None else self.suggest
            if suggest > apply:
                raise ValueError(f"classes.{label}: suggest ({suggest}) exceeds apply ({apply})")
        return self

    def thresholds(self, label: str) -> tuple[float, float]:
        """(apply, suggest) for ``label``, per-class overrides first."""
        override = self.classes.get(label)
        apply = override.apply if override and override.apply is not None else self.apply
        suggest = override.suggest if override and override.suggest is not None else self.suggest
        return apply, suggest


def _default_heads() -> dict[str, HeadPolicy]:
    return {
        "queue": HeadPolicy(apply=0.8, suggest=0.45),
        # Priority guesses alone do not hold a ticket for review; a wrong queue does.
        "priority": HeadPolicy(apply=0.8, suggest=0.5, review_when_unsure=False),
        "type": HeadPolicy(apply=0.8, suggest=0.5, review_when_unsure=False),
        "sentiment": HeadPolicy(apply=0.7, suggest=0.5, review_when_unsure=False),
    }


class EscalationRule(Section):
    """When every condition holds (head -> label, each at ``min_confidence`` or more), act."""

    name: str
    """Name shown in the note and logs."""
    when: dict[str, str]
    """Head -> label conditions that must all hold."""
    min_confidence: float = Field(0.6, ge=0, le=1)
    """Confidence each condition needs."""
    set_priority: str | None = None
    """Priority to set when the rule matches."""
    set_queue: str | None = None
    """Queue to set when the rule matches."""
    add_tags: list[str] = Field(default_factory=list)
    """Tags to add when the rule matches."""

    @model_validator(mode="after")
    def _does_something(self) -> EscalationRule:
        if not self.when:
            raise ValueError("when: needs at least one condition")
        if not (self.set_priority or self.set_queue or self.add_tags):
            raise ValueError("needs set_priority, set_queue or add_tags")
        return self


class OwnerSettings(Section):
    """Owner assignment: off by default."""

    strategy: Literal["none", "least_loaded", "round_robin"] = "none"
    """How to pick an owner for unowned tickets: none, least_loaded or round_robin."""
    cache_seconds: float = Field(60.0, ge=0)
    """How long a queue's agent list and loads are reused."""
    exclude: list[str] = Field(default_factory=list)
    """Agent logins never assigned."""


class QueueDescription(Section):
    """One of the helpdesk's queues in the admin's words."""

    description: str = Field(min_length=1)
    """What belongs in this queue, in a sentence or two (any language the model reads)."""
    examples: list[str] = Field(default_factory=list)
    """A few typical tickets (subject and text) of this queue; optional."""

    @field_validator("description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class PolicySettings(Section):
    """How predictions become changes."""

    mode: Literal["live", "shadow"] = "live"
    """live changes tickets; shadow only records what it would do."""
    heads: dict[str, HeadPolicy] = Field(default_factory=_default_heads)
    """Thresholds per head (queue, priority, type, sentiment)."""
    # Model label -> helpdesk queue name. Unlisted labels keep their own name;
    # a label mapped to "" is never routed (tagged and noted only).
    queue_map: dict[str, str] = Field(default_factory=dict)
    """Model queue label -> helpdesk queue name; unlisted labels keep their name, "" means never
    route.
    """
    queues: dict[str, QueueDescription] = Field(default_factory=dict)
    """The helpdesk's queues, each with a description and optional examples: tickets are
    routed by similarity to them from the first ticket, no training needed.
    """
    queue_source: Literal["auto", "descriptions", "model", "combined"] = "auto"
    """Where queue predictions come from: auto uses the descriptions when given, else the model;
    combined multiplies both (a queue head trained on this helpdesk's own history).
    """
    # Model label -> helpdesk priority name; empty: the helpdesk kind's defaults.
    priority_map: dict[str, str] = Field(default_factory=dict)
    """Model priority label -> helpdesk priority name; empty: the helpdesk's defaults."""
    label_tags: bool = True
    """Tag tickets with the applied and suggested labels."""
    # Keep what a human already set: a ticket outside the intake queues keeps its
    # queue, and one whose priority differs from the default keeps its priority,
    # unless the ticket's applied label tag shows that an earlier run set it.
    respect_human_changes: bool = True
    """Keep a queue or priority that a person already set (not one triage applied earlier)."""
    intake_queues: list[str] = Field(default_factory=list)
    """Queues new tickets arrive in; a ticket elsewhere was routed by a person."""
    default_priority: str | None = None
    """The priority new tickets get; any other was set by a person."""
    escalations: list[EscalationRule] = Field(default_factory=list)
    """Rules that combine heads, such as negative sentiment on a high-priority ticket."""
    owner: OwnerSettings = Field(default_factory=OwnerSettings)
    """Owner assignment."""
    note: bool = True
    """Write an internal note that explains what was done and why."""
    shadow_note: bool = False
    """In shadow mode, still write one internal note per ticket."""

    @property
    def routes_by_descriptions(self) -> bool:
        """Queue labels are the described queues (helpdesk names; queue_map does not apply)."""
        return bool(self.queues) and self.queue_source != "model"


class DraftSettings(Section):
    """Draft replies for the agent: never sent to the customer."""

    enabled: bool = True
    """Write a draft reply for the agent."""
    # Model queue label -> reply template; ``{number}`` and ``{title}`` are filled in.
    templates: dict[str, str] = Field(default_factory=dict)
    """Model queue label -> reply template; {number} and {title} are filled in."""
    # JSONL of answered tickets (subject, body, answer) to retrieve similar answers from.
    knowledge_file: Path | None = None
    """JSONL of answered tickets (subject, body, answer) to retrieve similar answers from."""
    min_similarity: float = Field(0.55, ge=-1, le=1)
    """Least cosine similarity for a retrieved answer to be used."""

    @field_validator("knowledge_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist")
        return value


class IngestSettings(Section):
    """Webhooks, polling, the reconcile sweep and the work queue."""

    webhooks: bool = True
    """Accept webhooks at /webhooks/<helpdesk>."""
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest webhook body accepted."""
    queue_size: int = Field(2000, ge=1, le=1_000_000)
    """Tickets that may wait; beyond it webhooks get 503 and polls pause."""
    concurrency: int = Field(16, ge=1, le=256)
    """Tickets processed at once."""
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    """How long inference waits for more tickets to batch with."""
    poll: bool = True
    """Poll the helpdesk for changed tickets."""
    poll_interval_seconds: float = Field(30.0, gt=0)
    """Time between polls."""
    poll_overlap_seconds: float = Field(5.0, ge=0)
    """How far each poll reaches back before its cursor."""
    sweep: bool = True
    """Run the reconcile sweep (off on replicas that only take webhooks)."""
    sweep_interval_seconds: float = Field(600.0, gt=0)
    """Time between reconcile sweeps over all open untriaged tickets."""
    page_size: int = Field(100, ge=1, le=200)
    """Tickets per page when listing."""
    max_pages: int = Field(50, ge=1, le=10_000)
    """Most pages read by one poll or sweep."""
    shard_count: int = Field(1, ge=1)
    """Replicas that share polling; each polls ticket ids where id % shard_count == shard_index."""
    shard_index: int = Field(0, ge=0)
    """This replica's shard."""
    max_attempts: int = Field(5, ge=1, le=100)
    """Attempts per ticket before it is marked triage-error."""
    retry_backoff_seconds: float = Field(5.0, ge=0)
    """First wait before a ticket is retried; doubles per attempt."""
    retry_backoff_max_seconds: float = Field(300.0, ge=0)
    """Longest wait before a ticket is retried."""

    @model_validator(mode="after")
    def _shard(self) -> IngestSettings:
        if self.shard_index >= self.shard_count:
            raise ValueError(
                f"shard_index ({self.shard_index}) must be below shard_count ({self.shard_count})"
            )
        return self


class ServerSettings(Section):
    """The HTTP endpoint: webhooks, /metrics, /healthz, /readyz."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 in a container)."""
    port: int = Field(8080, ge=0, le=65535)
    """Port for webhooks, /metrics, /healthz and /readyz."""
    drain_seconds: float = Field(20.0, ge=0, le=3600)
    """On SIGTERM, how long in-flight tickets may take to finish."""


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    format: Literal["json", "text"] = "json"
    """json (one object per line) or text."""
    # Ticket subjects and bodies stay out of logs unless an operator turns this on.
    ticket_text: bool = False
    """Allow ticket subjects and bodies in logs (off by default)."""


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    """The whole configuration of one sidecar process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    helpdesk: HelpdeskKind = HelpdeskKind.ZAMMAD
    """Which helpdesk to talk to: zammad, znuny or rt."""
    zammad: ZammadSettings = Field(default_factory=ZammadSettings)
    """Zammad connection."""
    znuny: ZnunySettings = Field(default_factory=ZnunySettings)
    """Znuny / OTRS / OTOBO connection."""
    rt: RTSettings = Field(default_factory=RTSettings)
    """Request Tracker connection."""
    http: HttpSettings = Field(default_factory=HttpSettings)
    """Timeouts, retries and TLS for helpdesk calls."""
    markers: MarkerSettings = Field(default_factory=MarkerSettings)
    """Names of the tags and marker values triage writes."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    """The model."""
    policy: PolicySettings = Field(default_factory=PolicySettings)
    """How predictions become changes."""
    drafts: DraftSettings = Field(default_factory=DraftSettings)
    """Draft replies."""
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    """Webhooks, polling, sweeps and the work queue."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """The HTTP endpoint."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    """Logging."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; raise ``ConfigError`` naming every bad field."""
    if config_file is None and os.environ.get(CONFIG_FILE_ENV):
        config_file = os.environ[CONFIG_FILE_ENV]
    path = Path(config_file) if config_file else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, path)) from None
    finally:
        _CONFIG_FILE.reset(token)


def describe_validation_error(error: ValidationError, path: Path | None = None) -> str:
    """One line per bad field, named as in the YAML file (dots) and the environment."""
    lines = [f"invalid configuration{f' in {path}' if path else ''}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        env_name = ENV_PREFIX + "__".join(str(part) for part in item["loc"]).upper()
        lines.append(f"  {location} ({env_name}): {item['msg']}")
    return "\n".join(lines)


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced, for ``--print-config``."""
    return settings.model_dump(mode="json")
