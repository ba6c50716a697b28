"""One settings object for the whole process.

Built from ``SYNCD_*`` environment variables and an optional TOML file; the
environment wins over the file. Validation happens here, once, so that a bad
setting stops the process before anything is started.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from adapters.kafka import KafkaSecurity

ENV_PREFIX = "SYNCD_"

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


Role = Literal["viewer", "operator", "admin"]


class ApiToken(BaseModel):
    """A bearer token for the admin API; ``name`` is who the audit trail records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    role: Role
    token: SecretStr = Field(min_length=16)
    profile: str | None = Field(
        default=None, min_length=1, max_length=100,
        description="The desk profile the token's user has (PERM-04): an operator token "
        "bound to a profile with the integration permission may configure the integration.")


class Settings(BaseSettings):
    """Everything an operator can configure. Unset services mean "embedded"."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; unset starts an embedded PostgreSQL."
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset starts an embedded broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client of the daemon connects.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, validate_default=True,
        description="SASL mechanism; required with a SASL protocol, refused without.")
    kafka_sasl_username: str | None = Field(
        default=None, min_length=1, validate_default=True,
        description="SASL user name (the principal User:<name>).")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validate_default=True, description="SASL password; never logged.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, validate_default=True, description="PEM file of the CA that signed the "
        "brokers' certificates (SSL, SASL_SSL); unset: the system's CAs.")
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        default="auto", description="The relays' idempotent producer (acks=all either way): "
        "auto is on unless the broker cannot grant a producer id (the embedded broker).")
    topic_prefix: str = Field(default="syncd", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    signals_topic: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$", description="The topic the sales "
        "signals are published to (TICKET-09); unset: <topic prefix>.signals.")
    group_id: str = Field(default="syncd", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    partitions: int = Field(default=6, ge=1, le=1000)
    http_listen: str = Field(default="127.0.0.1:8080", description="host:port for HTTP.")
    data_dir: Path = Field(default=Path(".syncd"))
    edition: Literal["free", "standard", "professional", "enterprise"] = Field(
        default="professional", description="The desk edition; the handshake board is not "
        "available in the free edition (HS-06).")
    api_tokens: list[ApiToken] = Field(
        default_factory=list, description="Bearer tokens for /api/v1; with none, a local "
        "admin token is generated into <data dir>/api-token.")
    webhook_secrets: dict[Literal["desk", "crm"], SecretStr] = Field(
        default_factory=dict, description="HMAC-SHA256 secret per webhook source.")
    history_timezone: str = Field(default="UTC", description="Time zone for history days.")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_deadline: float = Field(default=10.0, gt=0, le=600)
    consumer_session_timeout_ms: int | None = Field(
        default=None, ge=1_000, le=300_000, description="How long the consumer group "
        "waits for a silent member before its partitions move; unset: 6 s on the "
        "embedded broker, 10 s on a configured Kafka cluster.")
    initial_sync_window_days: int = Field(default=365, ge=1, le=36_500)
    batch_max: int = Field(default=5000, ge=1, le=100_000)
    relay_poll_interval: float = Field(default=1.0, gt=0, le=60)
    relay_resend_after: float = Field(default=30.0, gt=0, le=3600)
    crm_store: Literal["embedded", "zoho"] = Field(
        default="embedded", description="The CRM: the embedded store in the daemon's "
        "database, or a Zoho CRM organisation (docs/hosted.md).")
    zoho_crm_client_id: str | None = Field(
        default=None, min_length=1, validate_default=True,
        description="The Zoho API client's id (crm_store zoho).")
    zoho_crm_client_secret: SecretStr | None = Field(
        default=None, validate_default=True,
        description="The Zoho API client's secret; never logged.")
    zoho_crm_refresh_token: SecretStr | None = Field(
        default=None, validate_default=True,
        description="A refresh token of the integration user, with the scope "
        "ZohoCRM.modules.ALL (and ZohoCRM.bulk.READ for the bulk read); never logged.")
    zoho_crm_data_centre: Literal["com", "eu", "in", "com.au", "jp", "com.cn"] = Field(
        default="com", description="The data centre of the Zoho organisation.")
    zoho_crm_accounts_url: str | None = Field(
        default=None, description="Overrides the data centre's accounts server (a "
        "sandbox's, an emulator's).")
    zoho_crm_api_url: str | None = Field(
        default=None, description="Overrides the API host the accounts server names.")
    zoho_crm_sync_key_field: str = Field(
        default="Syncd_Key", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$",
        description="API name of the external-id field holding the sync's key of a record.")
    zoho_crm_poll_interval: float = Field(
        default=60.0, gt=0, le=86_400, description="Seconds between the polls that "
        "capture the CRM's changes.")
    zoho_crm_bulk_read: bool = Field(
        default=True, description="The first sync reads each CRM module by Zoho's bulk "
        "read (a job a 200,000 records, resumable); false: by listing 200 a call.")
    zoho_crm_notify_url: str | None = Field(
        default=None, pattern=r"^https?://", description="The daemon's /webhooks/zoho-crm "
        "as Zoho reaches it; unset: no notifications, the poll alone.")
    zoho_crm_channel_token: SecretStr | None = Field(
        default=None, validate_default=True, description="The token Zoho sends with "
        "each notification (required with a notify URL); never logged.")
    zoho_crm_channel_id: int = Field(
        default=1_480_000_001, ge=1, description="The notification channel's id.")
    zoho_crm_channel_hours: float = Field(
        default=24.0, gt=0, le=168, description="How long a notification channel is "
        "subscribed for (renewed with a quarter left; a week at most).")
    zoho_crm_credits: int | None = Field(
        default=None, ge=1, description="API credits the daemon may spend on the CRM in "
        "each credit window; writes park at nine tenths, reads at all of it; unset: not "
        "counted (docs/hosted.md).")
    zoho_crm_credit_hours: float = Field(
        default=24.0, gt=0, le=168, description="The credit window, in hours (Zoho: a "
        "day).")
    zoho_crm_calls_per_second: float | None = Field(
        default=None, gt=0, le=1000, description="Calls a second to the CRM at most; "
        "unset: only the concurrency limits them.")
    zoho_crm_concurrency: int = Field(
        default=5, ge=1, le=25, description="Calls to the CRM at once, writes of up to "
        "100 records each among them (the edition's API concurrency is 5 to 25).")
    desk_store: Literal["embedded", "zoho"] = Field(
        default="embedded", description="The desk: the embedded store in the daemon's "
        "database, or a Zoho Desk organisation (docs/hosted.md).")
    zoho_desk_client_id: str | None = Field(
        default=None, min_length=1, validate_default=True,
        description="The Zoho API client's id (desk_store zoho).")
    zoho_desk_client_secret: SecretStr | None = Field(
        default=None, validate_default=True,
        description="The Zoho API client's secret; never logged.")
    zoho_desk_refresh_token: SecretStr | None = Field(
        default=None, validate_default=True,
        description="A refresh token of the integration agent, with the scopes "
        "Desk.contacts.ALL, Desk.products.ALL, Desk.tickets.ALL (the handshake board), "
        "Desk.search.READ, Desk.basic.READ, Desk.settings.ALL (webhooks); never logged.")
    zoho_desk_org_id: str | None = Field(
        default=None, pattern=r"^[0-9]{1,20}$", validate_default=True,
        description="The Zoho Desk organisation's id (the orgId header of every call).")
    zoho_desk_data_centre: Literal["com", "eu", "in", "com.au", "jp", "com.cn"] = Field(
        default="com", description="The data centre of the Zoho Desk organisation.")
    zoho_desk_accounts_url: str | None = Field(
        default=None, description="Overrides the data centre's accounts server (a "
        "sandbox's, an emulator's).")
    zoho_desk_api_url: str | None = Field(
        default=None, description="Overrides the data centre's desk host "
        "(https://desk.zoho.com, ...).")
    zoho_desk_sync_key_field: str = Field(
        default="cf_syncd_key", pattern=r"^cf_[a-z0-9_]{1,60}$",
        description="API name of the custom field holding the sync's key of a record.")
    zoho_desk_poll_interval: float = Field(
        default=60.0, gt=0, le=86_400, description="Seconds between the polls that "
        "capture the desk's changes (behind its webhooks, or alone without them).")
    zoho_desk_webhook_url: str | None = Field(
        default=None, pattern=r"^https?://", description="The daemon's /webhooks/zoho-desk "
        "as Zoho reaches it; unset: no webhooks, the poll alone (editions without them).")
    zoho_desk_webhook_token: SecretStr | None = Field(
        default=None, validate_default=True, description="A secret the webhook URL "
        "carries (?token=), checked on every callback (required with a webhook URL); "
        "never logged.")
    zoho_desk_source_id: str = Field(
        default="5f1c2a7e-8d3b-4c6a-9e0f-73736e636400",
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="The webhook's ignoreSourceId: the sync's own writes carry it, so "
        "they raise no webhook (SYNC-14).")
    zoho_desk_credits: int | None = Field(
        default=None, ge=1, description="API credits the daemon may spend on the desk in "
        "each credit window; writes park at nine tenths, reads at all of it; unset: not "
        "counted (docs/hosted.md).")
    zoho_desk_credit_hours: float = Field(
        default=24.0, gt=0, le=168, description="The credit window, in hours (Zoho: a "
        "day).")
    zoho_desk_calls_per_second: float | None = Field(
        default=None, gt=0, le=1000, description="Calls a second to the desk at most; "
        "unset: only the concurrency limits them.")
    zoho_desk_concurrency: int = Field(
        default=5, ge=1, le=25, description="Writes to the desk at once (the edition's "
        "API concurrency is 5 to 25).")
    startup_wait: float = Field(
        default=600.0, ge=0, le=7 * 86_400, description="Seconds start-up waits for the "
        "database and the broker (capped backoff) before giving up; 0 waits for ever.")

    @field_validator("kafka_security_protocol")
    @classmethod
    def _protocol(cls, value: str, info: ValidationInfo) -> str:
        if value != "PLAINTEXT" and info.data.get("kafka_bootstrap") is None:
            raise ValueError(f"{value} needs kafka_bootstrap: the embedded broker speaks"
                             " PLAINTEXT only")
        return value

    @field_validator("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    @classmethod
    def _sasl(cls, value: object, info: ValidationInfo) -> object:
        protocol = info.data.get("kafka_security_protocol")
        if protocol is None:
            return value  # the protocol itself is wrong: said there
        if protocol in SASL_PROTOCOLS and value is None:
            raise ValueError(f"required with kafka_security_protocol {protocol}")
        if protocol not in SASL_PROTOCOLS and value is not None:
            raise ValueError(f"only with a SASL kafka_security_protocol (SASL_PLAINTEXT,"
                             f" SASL_SSL), not {protocol}")
        if isinstance(value, SecretStr) and not value.get_secret_value():
            raise ValueError("empty")
        return value

    @field_validator("kafka_ssl_cafile")
    @classmethod
    def _cafile(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        protocol = info.data.get("kafka_security_protocol")
        if value is None or protocol is None:
            return value
        if protocol not in TLS_PROTOCOLS:
            raise ValueError(f"only with a TLS kafka_security_protocol (SSL, SASL_SSL), not"
                             f" {protocol}")
        if not value.is_file():
            raise ValueError(f"{value}: no such file")
        return value

    @field_validator("zoho_crm_client_id", "zoho_crm_client_secret", "zoho_crm_refresh_token")
    @classmethod
    def _zoho_crm(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("crm_store") == "zoho" and value is None:
            raise ValueError("required with crm_store zoho")
        return value

    @field_validator("zoho_desk_client_id", "zoho_desk_client_secret",
                     "zoho_desk_refresh_token", "zoho_desk_org_id")
    @classmethod
    def _zoho_desk(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("desk_store") == "zoho" and value is None:
            raise ValueError("required with desk_store zoho")
        return value

    @field_validator("zoho_desk_webhook_token")
    @classmethod
    def _webhook_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("zoho_desk_webhook_url") and value is None:
            raise ValueError("required with zoho_desk_webhook_url")
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("at least 16 characters")
        return value

    @field_validator("zoho_crm_channel_token")
    @classmethod
    def _channel_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("zoho_crm_notify_url") and value is None:
            raise ValueError("required with zoho_crm_notify_url")
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("at least 16 characters")
        return value

    @field_validator("history_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("http_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port with a port from 0 to 65535")
        return value

    @property
    def http_host(self) -> str:
        return self.http_listen.rpartition(":")[0].strip("[]")

    @property
    def http_port(self) -> int:
        return int(self.http_listen.rpartition(":")[2])

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def sales_signals_topic(self) -> str:
        return self.signals_topic or f"{self.topic_prefix}.signals"

    def kafka_security(self) -> KafkaSecurity:
        """The one ``KafkaSecurity`` every Kafka client of the process is given."""
        from adapters.kafka import KafkaSecurity

        password = self.kafka_sasl_password
        return KafkaSecurity(
            protocol=self.kafka_security_protocol, sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=None if password is None else password.get_secret_value(),
            ssl_cafile=None if self.kafka_ssl_cafile is None else str(self.kafka_ssl_cafile))

    def session_timeout_ms(self, *, embedded: bool) -> int:
        """The consumer's session timeout. The embedded broker's group runs in one
        process: 6 s moves a dead replica's partitions soon. On a cluster the group
        coordinator itself can move (its broker killed or rolled), and heartbeats stop
        until a new one answers: 10 s rides that out without a rebalance, still well
        inside Kafka's own default of 45 s (and above its broker minimum of 6 s)."""
        if self.consumer_session_timeout_ms is not None:
            return self.consumer_session_timeout_ms
        return 6_000 if embedded else 10_000

    def kafka_idempotent(self, *, embedded: bool) -> bool | None:
        """The relays' idempotence: True, False, or None (``auto`` on a configured
        broker: try it, and go without if the broker cannot grant a producer id)."""
        if self.kafka_idempotence == "auto":
            return False if embedded else None
        return self.kafka_idempotence == "on"

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
        toml_file = _CONFIG_FILE.get() or os.environ.get(f"{ENV_PREFIX}CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)


_CONFIG_FILE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "syncd_config_file", default=None)


class SettingsError(Exception):
    """A setting is wrong; the message names it and says why."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning every validation problem into one clear message."""
    if config_file is not None and not config_file.is_file():
        raise SettingsError(f"config file {config_file}: no such file")
    # Handed to the sources through a context variable, not the environment: setting
    # SYNCD_CONFIG here would follow every later settings load of the process (and
    # every child it starts).
    token = _CONFIG_FILE.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        lines = []
        for problem in err.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            env_name = f"{ENV_PREFIX}{field.upper()}"
            lines.append(f"{env_name} ({field}): {problem['msg']}")
        raise SettingsError("bad setting: " + "; ".join(lines)) from None
    except (OSError, ValueError) as err:  # an unreadable or malformed TOML file
        raise SettingsError(f"config file: {err}") from None
    finally:
        _CONFIG_FILE.reset(token)
