"""Altaviz's one settings model and where its values come from.

Values are read, in increasing priority, from the defaults, a YAML file given with
``--config`` and ``ALTAVIZ_*`` environment variables. Every value remembers its source, so an
invalid one fails at start-up with a line naming the setting, the value and where it came from
(instead of a traceback at 3 a.m.).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from altaviz.core.catalog import Catalog, load_catalog
from altaviz.core.errors import ConfigError, InputError

ENV_PREFIX = "ALTAVIZ_"
log = logging.getLogger(__name__)


class Settings(BaseModel):
    """Every Altaviz setting. Each field ``x`` is set by ``ALTAVIZ_X`` or key ``x`` in --config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path(".altaviz"),
        description="where embedded services, Delta tables and landing files live")
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the runtime login (<database>_runtime) the worker, web "
                    "server and CLI use; unset: start an embedded PostgreSQL under data_dir")
    temporal_address: str | None = Field(
        default=None,
        description="Temporal frontend host:port; unset: start the Temporal dev server")
    temporal_namespace: str = Field(default="default", description="Temporal namespace")
    temporal_tls: bool | None = Field(
        default=None,
        description="connect to TEMPORAL_ADDRESS over TLS; unset: on when a server CA, server "
                    "name, client certificate or API key is set")
    temporal_tls_server_ca: Path | None = Field(
        default=None,
        description="PEM file of the CA that signed the Temporal server's certificate; unset: "
                    "the system's trusted CAs")
    temporal_tls_server_name: str | None = Field(
        default=None,
        description="name the Temporal server's certificate is checked against (and sent as "
                    "SNI); unset: the host of TEMPORAL_ADDRESS")
    temporal_tls_client_cert: Path | None = Field(
        default=None,
        description="PEM client certificate for mutual TLS (with TEMPORAL_TLS_CLIENT_KEY)")
    temporal_tls_client_key: Path | None = Field(
        default=None,
        description="PEM private key of TEMPORAL_TLS_CLIENT_CERT")
    temporal_api_key: SecretStr | None = Field(
        default=None,
        description="API key sent to Temporal as a bearer token (Temporal Cloud); turns "
                    "TLS on unless TEMPORAL_TLS=false")
    task_queue: str = Field(default="altaviz", description="Temporal task queue of the workers")
    temporal_port: int = Field(default=7233, ge=1, le=65535,
                               description="port of the embedded Temporal dev server")
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535,
                                  description="port of the embedded Temporal Web UI")
    http_host: str = Field(default="127.0.0.1", description="acknowledgement server bind address")
    http_port: int = Field(default=8765, ge=1, le=65535,
                           description="acknowledgement server port")
    public_url: str | None = Field(
        default=None,
        description="base URL of links in notifications; unset: http://HTTP_HOST:HTTP_PORT")
    link_secret: SecretStr | None = Field(
        default=None, description="HMAC secret signing acknowledgement links (required by serve)")
    link_ttl_hours: float = Field(default=72.0, gt=0,
                                  description="how long an acknowledgement link stays valid")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level: DEBUG, INFO, WARNING or ERROR (unset: INFO "
                                    "for up, worker and serve, WARNING for other commands)")
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token a Prometheus scrape of /metrics must send; "
                                  "unset: /metrics answers requests from this machine only")
    log_format: Literal["text", "json"] = Field(
        default="text", description="log format: text (one readable line per record) or json "
                                    "(one JSON object per line, for log shippers)")
    landing_dir: Path | None = Field(
        default=None, description="folder of incoming telemetry files; unset: DATA_DIR/landing")
    lake_dir: Path | None = Field(
        default=None, description="folder of the Delta tables; unset: DATA_DIR/lake")
    rules_file: Path = Field(default=Path(__file__).resolve().parents[2] / "rules" /
                             "thresholds.yaml", description="default rule set (YAML)")
    rules_overrides_dir: Path | None = Field(
        default=None, description="folder of per-organization override files <org_id>.yaml")
    contacts_file: Path | None = Field(
        default=None, description="contacts and routing file (YAML)")
    late_arrival_minutes: int = Field(
        default=90, ge=0,
        description="a reading arriving later than this is flagged late (gateways upload "
                    "hourly, so on-time readings are up to about 70 minutes old)")
    freshness_grace_minutes: int = Field(
        default=30, ge=0,
        description="a unit's data is fresh while its last reading is at most its "
                    "organization's gateway upload cadence (fleet file, default 60 minutes) "
                    "plus this")
    etl_memory_mb: int = Field(
        default=1536, ge=256,
        description="DuckDB's memory limit for an ETL run (it spills to <lake>/_tmp beyond "
                    "it); the run's peak RSS is about this plus 1-1.5 GB of Arrow and Delta "
                    "buffers")
    reminder_minutes: int = Field(
        default=60, ge=0, description="reminder interval while critical and unacknowledged; 0: off")
    # Parallelism and memory bounds of the ETL and the rules; defaults follow the cores of the
    # machine Altaviz runs on.
    etl_threads: int = Field(
        default=os.cpu_count() or 1, ge=1,
        description="DuckDB threads of an ETL stage with more than 250,000 input rows "
                    "(smaller stages, as in the hourly run, use one); default: this "
                    "machine's cores")
    etl_copy_streams: int = Field(
        default=max(1, min(4, os.cpu_count() or 1)), ge=1,
        description="parallel COPY connections writing new aggregate hours to PostgreSQL "
                    "(each is one busy backend); default: this machine's cores, at most 4")
    etl_bucket_hours: int = Field(
        default=300_000, ge=1,
        description="dirty compressor-hours gold recomputes at a time: bounds a bulk load's "
                    "DuckDB memory (larger: fewer re-reads of silver, more memory)")
    rules_threads: int = Field(
        default=max(1, min(4, os.cpu_count() or 1)), ge=1,
        description="threads of the rule engine's array work (the hourly evaluation, "
                    "backtests); default: this machine's cores, at most 4")
    database_owner_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the schema owner (<database>_owner, or a role that may "
                    "become it): migrations and fleet loading; unset: DATABASE_URL")
    etl_database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the ETL login (<database>_etl): `altaviz etl run` and "
                    "the ETL worker load with it, neither owner nor tenant; unset: "
                    "DATABASE_OWNER_URL (or DATABASE_URL)")
    escalation_policy_file: Path | None = Field(
        default=None,
        description="YAML escalation policy per organization (who hears about a new alert of "
                    "each severity, escalations, reminders, the escalation chain and the "
                    "fallback contact); default: critical alerts reach technicians and "
                    "supervisors, warnings technicians, escalation after the rule's delay")
    # The ETL worker: ETL stages are activities on a task queue of their own, so a long
    # backfill never holds up the alert workflows' tasks.
    etl_task_queue: str | None = Field(
        default=None,
        description="Temporal task queue of the ETL stage activities; unset: TASK_QUEUE "
                    "followed by -etl")
    workers: Literal["all", "alerts", "etl"] = Field(
        default="all",
        description="which workers `altaviz up` and `altaviz worker` run: all, alerts (alert "
                    "and pipeline workflows, rules, notifications) or etl (the ETL stages); "
                    "scale each on its own")
    # Field telemetry: which models exist and what they carry.
    model_catalog_file: Path | None = Field(
        default=None,
        description="an operator's model catalog (YAML): compressor and driver models added "
                    "to, or replacing, the built-in ones (see docs/OPERATIONS.md)")
    # Link key rotation: the previous key still verifies the links it signed.
    link_secret_previous: SecretStr | None = Field(
        default=None,
        description="the link secret before the last rotation: links it signed stay valid "
                    "until they expire (remove it LINK_TTL_HOURS after rotating)")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url", "database_owner_url", "etl_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("temporal_tls_server_ca", "temporal_tls_client_cert",
                     "temporal_tls_client_key")
    @classmethod
    def _pem_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Checked here, because the Temporal client reports an unreadable or swapped file
        # only at connect time, as a TLS error that names neither the setting nor the file.
        if value is None:
            return None
        try:
            content = value.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror}") from None
        if info.field_name == "temporal_tls_client_key":
            if b"PRIVATE KEY-----" not in content:
                raise ValueError(f"{value} holds no PEM private key")
        elif b"-----BEGIN CERTIFICATE-----" not in content:
            raise ValueError(f"{value} holds no PEM certificate")
        return value

    @field_validator("model_catalog_file")
    @classmethod
    def _catalog_file(cls, value: Path | None) -> Path | None:
        # Checked here, so a bad catalog fails at start-up rather than at the first fleet
        # load or rule check; the message names its file, line and key path.
        if value is not None:
            try:
                load_catalog(value)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _temporal_tls(self) -> Settings:
        """Reject TLS options that would be ignored or contradict each other, so a worker
        never silently connects with less protection than its operator configured."""
        if (self.temporal_tls_client_cert is None) != (self.temporal_tls_client_key is None):
            raise ValueError(
                f"{env_name('temporal_tls_client_cert')} and "
                f"{env_name('temporal_tls_client_key')} go together: set both (mutual TLS) "
                "or neither")
        tls_options = [env_name(name) for name in TLS_OPTIONS if getattr(self, name) is not None]
        if self.temporal_address is None and (tls_options or self.temporal_tls):
            given = tls_options or [env_name("temporal_tls")]
            raise ValueError(
                f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to an "
                f"external Temporal server: set {env_name('temporal_address')} too (the "
                "embedded dev server takes neither TLS nor an API key)")
        for name in ("database_owner_url", "etl_database_url"):
            if getattr(self, name) is not None and self.database_url is None:
                raise ValueError(
                    f"{env_name(name)} applies to an external PostgreSQL: set "
                    f"{env_name('database_url')} (the runtime login) too")
        tls_files = [name for name in tls_options if name != env_name("temporal_api_key")]
        if self.temporal_tls is False and tls_files:
            raise ValueError(
                f"{env_name('temporal_tls')} is false but {', '.join(tls_files)} "
                f"{'is' if len(tls_files) == 1 else 'are'} set: remove one or the other")
        return self

    @property
    def landing_path(self) -> Path:
        """The landing folder (telemetry files arrive here)."""
        return self.landing_dir or self.data_dir / "landing"

    @property
    def lake_path(self) -> Path:
        """The folder holding the bronze/silver/gold/quarantine Delta tables."""
        return self.lake_dir or self.data_dir / "lake"

    @property
    def etl_queue(self) -> str:
        """The ETL worker's task queue."""
        return self.etl_task_queue or etl_queue_of(self.task_queue)

    @property
    def catalog(self) -> Catalog:
        """The model catalog in force: the built-in models with ``model_catalog_file`` over
        them."""
        return load_catalog(self.model_catalog_file)

    @property
    def base_url(self) -> str:
        """Base URL used to build links that technicians open."""
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")


def etl_queue_of(task_queue: str) -> str:
    """The ETL task queue that goes with a workers' task queue when none is set."""
    return f"{task_queue}-etl"


TLS_OPTIONS = ("temporal_tls_server_ca", "temporal_tls_server_name", "temporal_tls_client_cert",
               "temporal_tls_client_key", "temporal_api_key")
"""Settings that secure the connection to an external Temporal server."""

SECRETS = ("link_secret", "temporal_api_key", "link_secret_previous", "metrics_token")
"""Settings whose values are never printed."""


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


def _describe() -> str:
    lines = ["settings (environment variable: meaning [default]):"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "" if default is None else f" [{default}]"
        if name == "rules_file":
            shown = " [rules/thresholds.yaml]"
        lines.append(f"  {env_name(name):<32} {info.description}{shown}")
    return "\n".join(lines)


ENV_HELP = _describe()


def _mask(field: str, value: Any) -> str:
    if field in SECRETS:
        return "'***'"
    if field in ("database_url", "database_owner_url", "etl_database_url") and isinstance(
            value, str):
        return repr(mask_url(value))
    return repr(value)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print or log."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


#: Settings that existed in earlier releases and no longer do, with what replaced them: an
#: upgrade that still sets one starts with a warning instead of failing on it.
RETIRED: dict[str, str] = {
    "etl_child_process_rows": "ETL stages run as activities of the ETL worker, no child "
                              "processes; memory is bounded by ALTAVIZ_ETL_MEMORY_MB",
    "rules_connections": "the rule engine runs on one connection; ALTAVIZ_RULES_THREADS sizes "
                         "its array work",
    "freshness_sla_minutes": "freshness is judged against each organization's upload cadence "
                             "plus ALTAVIZ_FRESHNESS_GRACE_MINUTES",
}


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings from a YAML file and the environment, failing with one line per problem.

    Raises:
        ConfigError: a file that cannot be read, an unknown key or variable, or invalid values;
            the message names each setting, its (masked) value and its source.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: expected a mapping of settings")
        for key, value in loaded.items():
            if key in RETIRED:
                log.warning("%s: setting %r is retired and ignored: %s", config_file, key,
                            RETIRED[key])
                continue
            if key not in Settings.model_fields:
                problems.append(f"{config_file}: unknown setting {key!r}")
                continue
            values[key] = value
            sources[key] = f"config file {config_file}"
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        key = var[len(ENV_PREFIX):].lower()
        if key in RETIRED:
            log.warning("environment variable %s is retired and ignored: %s", var, RETIRED[key])
            continue
        if key not in Settings.model_fields:
            problems.append(f"unknown environment variable {var} (see `altaviz --help`)")
            continue
        values[key] = value if value != "" else None
        sources[key] = f"environment variable {var}"
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a rule across settings: its message names them
                lines.append(str(err.get("ctx", {}).get("error", err["msg"])))
                continue
            field = str(err["loc"][0])
            shown = _mask(field, values.get(field))
            lines.append(f"{env_name(field)}={shown} (from {sources.get(field, 'defaults')}): "
                         f"{err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None
