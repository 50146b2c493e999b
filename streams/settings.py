"""One typed settings object, read from the environment once, at start-up.

Every field is named after its environment variable (``kafka_brokers`` <- ``KAFKA_BROKERS``);
the names from the seed documents are kept as they are. ``load()`` turns validation failures into
a ``ConfigError`` whose message names each offending variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.presets import load_presets
from streams.catalog import Layout
from streams.retry import parse_delays, tier_topics


class ConfigError(ValueError):
    """The environment does not describe a runnable configuration."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- Kafka ---
    kafka_brokers: str = Field("kafka:9092", description="Bootstrap servers, comma separated")
    app_id: str = Field("book-covers", description="Faust app id = consumer group id")
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_book_enriched: str = "book_enriched"
    topic_cover_requested: str = "cover_requested"
    topic_cover_processed: str = "cover_processed"
    topic_dead_letter: str = "cover_dead_letter"
    topic_replication_factor: int = Field(1, ge=1, le=16)
    topic_retry_prefix: str = Field("cover_retry", description="retry tiers: <prefix>_1, _2...")
    retry_delays_sec: str = Field("10,60,600", description="seconds before each retry tier")
    kafka_idempotence: bool = Field(False, description="Needs a broker with InitProducerId")
    kafka_session_timeout_sec: int = Field(30, ge=3, le=600)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = Field("", description="CA bundle (PEM); empty = the system's")
    kafka_ssl_certfile: str = Field("", description="client certificate (PEM) for mutual TLS")
    kafka_ssl_keyfile: str = Field("", description="the client certificate's key (PEM)")
    worker_web_port: int = Field(6066, ge=0, le=65535, description="0 = no web server")
    worker_web_host: str = Field("127.0.0.1", description="address the worker's web server binds")
    worker_web_advertised_host: str = Field(
        "", description="host other workers reach this one at (the pod IP); empty = bind host")
    worker_data_dir: str = Field("data/faust", description="Faust's local state directory")

    # --- Fetching ---
    max_image_size_mb: float = Field(5, gt=0, le=1024)
    process_timeout_sec: float = Field(20, gt=0, le=3600)
    fetch_idle_timeout_sec: float = Field(5, gt=0, le=3600, description="max wait for bytes")
    allowed_source_hosts: str = Field("", description="comma separated; *.domain; empty = any")
    allow_private_sources: bool = False
    allowed_source_buckets: str = Field("", description="s3:// source buckets besides the store's")

    # --- Rendering ---
    max_image_pixels: int = Field(16_800_000, ge=1)
    max_image_frames: int = Field(100, ge=1, le=100_000)
    max_decode_memory_mb: int = Field(256, ge=1, le=65_536)
    render_threads: int = Field(0, ge=0, description="renders at once; 0 = one per core")
    worker_concurrency: int = Field(
        0, ge=0, le=256, description="input events handled at once; 0 = twice the renders")
    presets_file: str = Field("", description="TOML or YAML presets beside the built-in one")

    # --- Storage ---
    storage_url: str = Field("", description="file:///dir or s3://bucket; empty = s3 bucket")
    image_storage_bucket: str = "book-covers"
    public_base_url: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_addressing_style: Literal["", "auto", "path", "virtual"] = Field(
        "", description="empty = path with S3_ENDPOINT (MinIO), else auto")
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_create_bucket: bool = False
    presign_expiry_sec: int = Field(7 * 24 * 3600, ge=1, le=7 * 24 * 3600)

    # --- State and catalog ---
    redis_url: str = "redis://localhost:6379/0"
    job_ttl_sec: int = Field(7 * 24 * 3600, ge=60)
    catalog_url: str = "sqlite:///./data/catalog.db"
    catalog_table: str = "catalog"
    catalog_columns: str = Field("", description="field=column,... for an existing table")
    catalog_migrate: bool = Field(True, description="apply catalog migrations at start-up")
    catalog_batch_size: int = Field(200, ge=1, le=10_000)
    catalog_batch_ms: int = Field(500, ge=0, le=60_000)

    # --- HTTP shim and webhooks ---
    shim_host: str = Field("127.0.0.1", description="address `covers shim` binds")
    shim_port: int = Field(8000, ge=1, le=65535)
    shim_api_token: str = Field("", description="bearer token required on /v2; empty = open")
    shim_publish_timeout_sec: float = Field(5, gt=0, le=120)
    webhook_secret: str = Field("", description="HMAC key signing webhooks; empty = unsigned")

    # --- Operations ---
    enable_metrics: bool = True
    metrics_port: int = Field(9091, ge=1, le=65535, description="Prometheus /metrics")
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")
    log_level: str = "info"
    log_format: Literal["json", "text"] = Field("json", description="json: one object a line")

    @field_validator("kafka_brokers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        for broker in value.split(","):
            host, _, port = broker.strip().removeprefix("kafka://").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{broker!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        # Model-level: the messages name the variables and never echo a value (a password).
        protocol = self.kafka_security_protocol
        tls_files = {"KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
                     "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
                     "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile}
        sasl = self.kafka_sasl_username, self.kafka_sasl_password
        if protocol.startswith("SASL") and not all(sasl):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                             "KAFKA_SASL_PASSWORD")
        if not protocol.startswith("SASL") and any(sasl):
            raise ValueError("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD go with KAFKA_SECURITY_"
                             f"PROTOCOL=SASL_SSL or SASL_PLAINTEXT (it is {protocol})")
        if not protocol.endswith("SSL") and any(tls_files.values()):
            raise ValueError(f"KAFKA_SSL_* files go with KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL "
                             f"(it is {protocol})")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        for name, path in tls_files.items():
            if path and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path!r}")
        return self

    @field_validator("retry_delays_sec")
    @classmethod
    def _delays(cls, value: str) -> str:
        parse_delays(value)  # ValueError names the problem
        return value

    @field_validator("presets_file")
    @classmethod
    def _presets(cls, value: str) -> str:
        if value:
            load_presets(value)  # a broken file stops start-up with its reason
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("catalog_url")
    @classmethod
    def _catalog(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be sqlite:///path or postgresql://...")
        return value

    @model_validator(mode="after")
    def _catalog_layout(self) -> Settings:
        try:
            Layout.parse(self.catalog_table, self.catalog_columns)
        except ValueError as exc:
            raise ValueError(f"CATALOG_TABLE / CATALOG_COLUMNS: {exc}") from None
        return self

    @property
    def catalog_layout(self) -> Layout:
        return Layout.parse(self.catalog_table, self.catalog_columns)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("crit", "error", "warn", "info", "debug"):
            raise ValueError("must be one of crit, error, warn, info, debug")
        return value

    @model_validator(mode="after")
    def _storage(self) -> Settings:
        scheme = urlsplit(self.resolved_storage_url).scheme
        if scheme not in ("file", "s3"):
            raise ValueError("STORAGE_URL must be file:///dir or s3://bucket")
        return self

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"s3://{self.image_storage_bucket}"

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return parse_delays(self.retry_delays_sec)

    @property
    def retry_topics(self) -> list[str]:
        return tier_topics(self.topic_retry_prefix, self.retry_delays)

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{b.strip().removeprefix('kafka://')}"
                        for b in self.kafka_brokers.split(","))

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_size_mb * 1024 * 1024)


def load(**overrides: object) -> Settings:
    """Read and validate the environment (``overrides`` win); raise ConfigError naming variables."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["loc"]:  # a field: name its variable and the value it got
                name = "_".join(str(p) for p in err["loc"]).upper()
                message = f"{name}: {message} (got {err.get('input')!r})"
            problems.append(message)  # model-level checks name their variables themselves
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
