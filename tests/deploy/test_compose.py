"""docker-compose.kafka.yml, Prometheus and Grafana provisioning, checked offline."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streams.settings import ConfigError, Settings, load

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {name.upper() for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    return spec


def _spec_schema() -> dict[str, Any]:  # the compose specification, as check-jsonschema ships it
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendored.joinpath("compose-spec.json").read_text())
    return schema


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, _spec_schema(), cls=jsonschema.Draft7Validator)


def test_a_broken_file_is_refused_by_the_schema(compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"],
                                      "redis": {**compose["services"]["redis"], "ports": 6379}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _spec_schema(), cls=jsonschema.Draft7Validator)


def test_every_part_of_the_stack_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "minio", "minio-init", "redis", "postgres", "worker",
                             "shim", "prometheus", "grafana"}
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "zookeeper" not in yaml.safe_dump(compose).lower()
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert services["worker"]["depends_on"]["minio-init"] == {
        "condition": "service_completed_successfully"}
    assert "mc mb" in services["minio-init"]["command"][0]
    assert services["worker"]["build"] == "." and services["worker"]["command"] == ["worker"]
    assert services["shim"]["command"] == ["shim"]


def test_worker_and_shim_get_a_loadable_configuration(compose: dict[str, Any]) -> None:
    for name in ("worker", "shim"):
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert set(env) - SETTINGS == set(), f"{name}: variables the code does not read"
        try:
            settings = load(**{k.lower(): v for k, v in env.items()})
        except ConfigError as exc:
            pytest.fail(f"{name}: {exc}")
        assert settings.kafka_brokers == "kafka:9092"
        assert settings.s3_endpoint == "http://minio:9000"
        assert settings.catalog_url.startswith("postgresql://covers:covers@postgres:5432/")
        assert settings.redis_url == "redis://redis:6379/0"
        bucket = settings.resolved_storage_url.removeprefix("s3://")
        assert f"local/{bucket}" in compose["services"]["minio-init"]["command"][0]


def test_prometheus_scrapes_the_worker_and_the_shim(compose: dict[str, Any]) -> None:
    mount = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / mount).read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    worker_env = compose["services"]["worker"]["environment"]
    metrics_port = load(**{k.lower(): str(v) for k, v in worker_env.items()}).metrics_port
    assert jobs["covers-worker"]["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": metrics_port}
    shim_port = compose["services"]["shim"]["environment"]["SHIM_PORT"]
    assert jobs["covers-shim"]["static_configs"][0]["targets"] == [f"shim:{shim_port}"]


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    for source in mounts:
        assert (ROOT / source).is_dir(), source
    provisioning = ROOT / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "covers.yml").read_text())["providers"]
    dashboards_dir = next(s for s, t in mounts.items() if t == provider["options"]["path"])
    dashboard = json.loads((ROOT / dashboards_dir / "covers.json").read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    assert uids == {datasource["uid"]}
