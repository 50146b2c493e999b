from pathlib import Path

import pytest

from streams.settings import ConfigError, Settings, load


def test_defaults_follow_the_seed() -> None:
    settings = load()
    assert settings.kafka_brokers == "kafka:9092"
    assert settings.image_storage_bucket == "book-covers"
    assert settings.max_image_size_mb == 5 and settings.max_image_bytes == 5 * 1024 * 1024
    assert settings.process_timeout_sec == 20
    assert settings.resolved_storage_url == "s3://book-covers"
    assert settings.allow_private_sources is False


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "a:1,b:2")
    monkeypatch.setenv("IMAGE_STORAGE_BUCKET", "covers-x")
    monkeypatch.setenv("MAX_IMAGE_SIZE_MB", "2.5")
    monkeypatch.setenv("ALLOW_PRIVATE_SOURCES", "true")
    settings = load()
    assert settings.broker_url == "kafka://a:1;kafka://b:2"
    assert settings.resolved_storage_url == "s3://covers-x"
    assert settings.max_image_bytes == int(2.5 * 1024 * 1024)
    assert settings.allow_private_sources is True


@pytest.mark.parametrize(("var", "value"), [
    ("KAFKA_BROKERS", "no-port"), ("MAX_IMAGE_SIZE_MB", "-1"), ("MAX_IMAGE_SIZE_MB", "lots"),
    ("PROCESS_TIMEOUT_SEC", "0"), ("REDIS_URL", "http://x"), ("CATALOG_URL", "mysql://x"),
    ("LOG_LEVEL", "warning"), ("TOPIC_PARTITIONS", "0"),
])
def test_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load()


def test_bad_storage_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_URL", "ftp://somewhere")
    with pytest.raises(ConfigError, match="STORAGE_URL"):
        load()


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    missing = [name.upper() for name in Settings.model_fields
               if f"`{name.upper()}`" not in table]
    assert missing == []
