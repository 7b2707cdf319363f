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
