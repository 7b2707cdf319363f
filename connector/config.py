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

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class HttpSettings(Section):
    """How the sidecar talks to the helpdesk: timeouts, retries, TLS."""

    connect_timeout_seconds: float = Field(3.05, gt=0, le=60)
    read_timeout_seconds: float = Field(10.0, gt=0, le=300)
    retry_attempts: int = Field(4, ge=1, le=20)
    retry_total_seconds: float = Field(30.0, gt=0, le=600)
    retry_backoff_initial_seconds: float = Field(0.25, gt=0, le=60)
    retry_backoff_max_seconds: float = Field(8.0, gt=0, le=300)
    retry_after_max_seconds: float = Field(30.0, ge=0, le=3600)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    pool_size: int = Field(16, ge=1, le=256)


class MarkerSettings(Section):
    """Names of what triage records on a ticket (tags in Zammad, field values elsewhere)."""

    triaged_tag: str = "ai-triaged"
    review_tag: str = "needs-review"
    error_tag: str = "triage-error"
    retriage_tag: str = "retriage"
    claim_prefix: str = "ai-triage-run:"
    label_tag_prefix: str = "ai:"
    claim_ttl_seconds: float = Field(300.0, gt=0)

    @field_validator("triaged_tag", "review_tag", "error_tag", "retriage_tag", "claim_prefix")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or "," in value:
            raise ValueError("must be non-empty and contain no comma")
        return value.strip()


class ZammadSettings(Section):
    """Zammad REST API v1. Give ``token`` (preferred) or ``username`` + ``password``."""

    url: str = "http://127.0.0.1:8765"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    require_webhook_signature: bool = True
    open_states: list[str] = Field(default_factory=lambda: ["new", "open"])
    shared_drafts: bool = True
    use_search: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class ZnunyRoutes(Section):
    """Routes of the GenericTicketConnectorREST web service (as shipped by default)."""

    session_create: str = "/Session"
    ticket_get: str = "/Ticket/{id}"
    ticket_search: str = "/Ticket"
    ticket_search_method: Literal["GET", "POST"] = "GET"
    ticket_update: str = "/Ticket/{id}"
    ticket_update_method: Literal["PATCH", "PUT", "POST"] = "PATCH"


class ZnunySettings(Section):
    """Znuny / OTRS 6 / OTOBO via the GenericTicketConnectorREST web service."""

    url: str = "http://127.0.0.1/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
    username: str = "triage"
    password: SecretStr | None = None
    use_session: bool = True
    routes: ZnunyRoutes = Field(default_factory=ZnunyRoutes)
    marker_field: str = "AITriage"
    tags_field: str | None = None
    open_state_types: list[str] = Field(default_factory=lambda: ["new", "open"])
    queues: list[str] = Field(default_factory=list)
    priorities: list[str] = Field(
        default_factory=lambda: ["1 very low", "2 low", "3 normal", "4 high", "5 very high"]
    )
    server_time_zone: str = "UTC"
    webhook_secret: SecretStr | None = None
    webhook_secret_header: str = "X-Triage-Secret"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class RTSettings(Section):
    """Request Tracker 5 REST2. Give ``token`` (preferred) or ``username`` + ``password``."""

    url: str = "http://127.0.0.1:8080"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    marker_field: str = "AI Triage"
    tags_field: str | None = None
    active_statuses: list[str] = Field(default_factory=lambda: ["new", "open", "stalled"])
    # RT stores priorities as numbers; these are the named levels triage reads and writes.
    priority_levels: dict[str, int] = Field(
        default_factory=lambda: {"Low": 0, "Medium": 50, "High": 100}
    )

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
    # None: the container's CPU limit (cgroup quota), else the CPUs this process may use.
    threads: int | None = Field(None, ge=1, le=64)
    max_batch: int = Field(64, ge=1, le=1024)


class ClassThresholds(Section):
    apply: float | None = Field(None, ge=0, le=1)
    suggest: float | None = Field(None, ge=0, le=1)


class HeadPolicy(Section):
    """Thresholds of one head: apply at or above ``apply``, suggest at or above ``suggest``."""

    enabled: bool = True
    apply: float = Field(0.8, ge=0, le=1)
    suggest: float = Field(0.5, ge=0, le=1)
    # Whether a prediction below both thresholds puts the ticket up for human review.
    review_when_unsure: bool = True
    classes: dict[str, ClassThresholds] = Field(default_factory=dict)

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
        "priority": HeadPolicy(apply=0.8, suggest=0.5),
        "type": HeadPolicy(apply=0.8, suggest=0.5, review_when_unsure=False),
        "sentiment": HeadPolicy(apply=0.7, suggest=0.5, review_when_unsure=False),
    }


class EscalationRule(Section):
    """When every condition holds (head -> label, each at ``min_confidence`` or more), act."""

    name: str
    when: dict[str, str]
    min_confidence: float = Field(0.6, ge=0, le=1)
    set_priority: str | None = None
    set_queue: str | None = None
    add_tags: list[str] = Field(default_factory=list)

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
    cache_seconds: float = Field(60.0, ge=0)
    exclude: list[str] = Field(default_factory=list)


class PolicySettings(Section):
    """How predictions become changes."""

    mode: Literal["live", "shadow"] = "live"
    heads: dict[str, HeadPolicy] = Field(default_factory=_default_heads)
    # Model label -> helpdesk queue name. Unlisted labels keep their own name;
    # a label mapped to "" is never routed (tagged and noted only).
    queue_map: dict[str, str] = Field(default_factory=dict)
    # Model label -> helpdesk priority name; empty: the helpdesk kind's defaults.
    priority_map: dict[str, str] = Field(default_factory=dict)
    label_tags: bool = True
    # Keep what a human already set: a ticket outside the intake queues keeps its
    # queue, and one whose priority differs from the default keeps its priority.
    respect_human_changes: bool = True
    intake_queues: list[str] = Field(default_factory=list)
    default_priority: str | None = None
    escalations: list[EscalationRule] = Field(default_factory=list)
    owner: OwnerSettings = Field(default_factory=OwnerSettings)
    note: bool = True
    shadow_note: bool = False


class DraftSettings(Section):
    """Draft replies for the agent: never sent to the customer."""

    enabled: bool = True
    # Model queue label -> reply template; ``{number}`` and ``{title}`` are filled in.
    templates: dict[str, str] = Field(default_factory=dict)
    # JSONL of answered tickets (subject, body, answer) to retrieve similar answers from.
    knowledge_file: Path | None = None
    min_similarity: float = Field(0.55, ge=-1, le=1)

    @field_validator("knowledge_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist")
        return value


class IngestSettings(Section):
    """Webhooks, polling, the reconcile sweep and the work queue."""

    webhooks: bool = True
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    queue_size: int = Field(2000, ge=1, le=1_000_000)
    concurrency: int = Field(16, ge=1, le=256)
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    poll: bool = True
    poll_interval_seconds: float = Field(30.0, gt=0)
    poll_overlap_seconds: float = Field(5.0, ge=0)
    sweep_interval_seconds: float = Field(600.0, gt=0)
    page_size: int = Field(100, ge=1, le=200)
    max_pages: int = Field(50, ge=1, le=10_000)
    shard_count: int = Field(1, ge=1)
    shard_index: int = Field(0, ge=0)
    max_attempts: int = Field(5, ge=1, le=100)
    retry_backoff_seconds: float = Field(5.0, ge=0)
    retry_backoff_max_seconds: float = Field(300.0, ge=0)

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
    port: int = Field(8080, ge=0, le=65535)
    drain_seconds: float = Field(20.0, ge=0, le=3600)


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    # Ticket subjects and bodies stay out of logs unless an operator turns this on.
    ticket_text: bool = False


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    """The whole configuration of one sidecar process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    helpdesk: HelpdeskKind = HelpdeskKind.ZAMMAD
    zammad: ZammadSettings = Field(default_factory=ZammadSettings)
    znuny: ZnunySettings = Field(default_factory=ZnunySettings)
    rt: RTSettings = Field(default_factory=RTSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    markers: MarkerSettings = Field(default_factory=MarkerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    drafts: DraftSettings = Field(default_factory=DraftSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

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
