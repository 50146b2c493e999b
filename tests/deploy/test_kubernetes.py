"""k8s/ rendered offline and checked: Kubernetes schemas, the KEDA CRD schema, and the wiring
between manifests and the settings the code reads."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.settings import ConfigError, Settings, load
from tests.deploy.kustomize import Doc, load_all, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("local", "aws")
KUBERNETES_VERSION = "1.32.0"
KEDA_SCHEMA = K8S / "schemas" / "keda-scaledobject.schema.json"  # KEDA's ScaledObject CRD
SETTINGS = {name.upper() for name in Settings.model_fields}


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _config(docs: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = _one(docs, "ConfigMap", "covers-config")["data"]
    return data


def _template_secret(config: dict[str, str] | None = None) -> dict[str, str]:
    """The Secret template, filled in as its comments say for ``config``'s transport."""
    docs = load_all(K8S / "base" / "secret.example.yaml")
    data: dict[str, str] = _one(docs, "Secret", "covers-secrets")["stringData"]
    if config and config.get("KAFKA_SECURITY_PROTOCOL", "").startswith("SASL"):
        data = {**data, "KAFKA_SASL_USERNAME": "covers", "KAFKA_SASL_PASSWORD": "filled-in"}
    return data


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", OVERLAYS)
def test_the_renderer_agrees_with_kubectl(name: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / name)],
                         capture_output=True, text=True, timeout=60, check=True).stdout

    def keyed(docs: list[Doc]) -> dict[tuple[str, str], str]:
        return {(d["kind"], d["metadata"]["name"]): json.dumps(d, sort_keys=True) for d in docs}

    assert keyed(render(K8S / "overlays" / name)) == keyed(
        [d for d in yaml.safe_load_all(out) if d])


def test_built_in_kinds_match_the_kubernetes_schemas(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    built_in = [d for d in docs if d["apiVersion"].split("/")[0] in (
        "v1", "apps", "batch", "policy")]
    assert {d["kind"] for d in built_in} >= {
        "Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"}
    for doc in built_in:  # strict: an unknown (misspelt) field fails too
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_is_caught() -> None:  # the validator is not a rubber stamp
    docs = render(K8S / "base")
    worker = _one(docs, "Deployment", "covers-worker")
    worker["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


def test_the_scaled_object_matches_the_keda_schema_and_the_worker(
        overlay: tuple[str, list[Doc]]) -> None:
    name, docs = overlay
    schema = json.loads(KEDA_SCHEMA.read_text())
    scaled = _one(docs, "ScaledObject", "covers-worker")
    jsonschema.validate(scaled, schema, cls=jsonschema.Draft202012Validator)
    config = _config(docs)
    spec = scaled["spec"]
    assert _one(docs, "Deployment", spec["scaleTargetRef"]["name"])
    assert spec["minReplicaCount"] >= 1  # never parked at zero
    # A group shares each partition with one consumer at most: more workers would idle.
    assert spec["maxReplicaCount"] <= int(config["TOPIC_PARTITIONS"])
    kafka = [t for t in spec["triggers"] if t["type"] == "kafka"]
    assert {t["metadata"]["topic"] for t in kafka} == {
        config["TOPIC_BOOK_ENRICHED"], config["TOPIC_COVER_REQUESTED"]}
    for trigger in kafka:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == config["APP_ID"]  # the Faust app id is the group
        assert meta["bootstrapServers"] == config["KAFKA_BROKERS"]
        assert int(meta["lagThreshold"]) > int(meta["activationLagThreshold"]) >= 0
        auth = _one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["apiVersion"] == "keda.sh/v1alpha1"
        secrets = docs if name == "local" else load_all(K8S / "base" / "secret.example.yaml")
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["parameter"] in ("sasl", "tls", "username", "password", "ca", "cert",
                                        "key")
            assert ref["key"] in _one(secrets, "Secret", ref["name"])["stringData"]


def test_the_keda_schema_refuses_a_malformed_scaled_object() -> None:
    docs = render(K8S / "overlays" / "local")
    scaled = _one(docs, "ScaledObject", "covers-worker")
    assert scaled["spec"]["maxReplicaCount"] == int(_config(docs)["TOPIC_PARTITIONS"])
    scaled["spec"]["maxReplicaCount"] = "4"  # a string: the CRD schema refuses it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, json.loads(KEDA_SCHEMA.read_text()),
                            cls=jsonschema.Draft202012Validator)


def test_the_worker_deployment_fits_the_worker(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    config = _config(docs)
    settings = load(**{k.lower(): v for k, v in {**config, **_template_secret(config)}.items()})
    pod = _one(docs, "Deployment", "covers-worker")["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["args"] == ["worker"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"web": settings.worker_web_port, "metrics": settings.metrics_port}
    assert settings.worker_web_host == settings.metrics_host == "0.0.0.0"  # probes reach them
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    # Room for an in-flight fetch (PROCESS_TIMEOUT_SEC) plus Faust's commit and group leave.
    assert pod["terminationGracePeriodSeconds"] >= settings.process_timeout_sec + 30
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
        "kubernetes.io/hostname"}
    advertised = next(e for e in worker["env"] if e["name"] == "WORKER_WEB_ADVERTISED_HOST")
    assert advertised["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    _check_hardening(pod, worker)
    tmp = next(m for m in worker["volumeMounts"] if m["name"] == "tmp")["mountPath"]
    assert settings.worker_data_dir.startswith(tmp + "/")  # writable on a read-only root
    limit = _mebibytes(worker["resources"]["limits"]["memory"])
    renders = settings.render_threads
    assert renders >= 1 and limit >= renders * settings.max_decode_memory_mb + 256


def test_the_shim_deployment_and_service(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    config = _config(docs)
    pod = _one(docs, "Deployment", "covers-shim")["spec"]["template"]["spec"]
    (shim,) = pod["containers"]
    assert shim["args"] == ["shim"]
    assert shim["ports"] == [{"name": "http", "containerPort": int(config["SHIM_PORT"])}]
    assert config["SHIM_HOST"] == "0.0.0.0"
    assert shim["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    _check_hardening(pod, shim)
    service = _one(docs, "Service", "covers-shim")
    assert service["spec"]["selector"] == _one(
        docs, "Deployment", "covers-shim")["spec"]["selector"]["matchLabels"]


def _check_hardening(pod: Doc, container: Doc) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert {"name": "covers-config"} in [e.get("configMapRef") for e in container["envFrom"]]
    assert {"name": "covers-secrets"} in [e.get("secretRef") for e in container["envFrom"]]


def _mebibytes(quantity: str) -> int:
    return int(quantity[:-2]) * (1024 if quantity.endswith("Gi") else 1)


def test_budgets_and_monitors_select_what_exists(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert {b["metadata"]["name"] for b in budgets} == {"covers-worker", "covers-shim"}
    for budget in budgets:
        pods = deployments[budget["metadata"]["name"]]["spec"]["template"]["metadata"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pods["labels"].items()
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        wanted = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in docs if s["kind"] == "Service"
                    and wanted.items() <= s["metadata"].get("labels", {}).items()]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_every_setting_is_in_the_config_map_or_the_secret() -> None:
    config = set(_config(render(K8S / "base")))
    secret = set(_template_secret())
    from_pod = {"WORKER_WEB_ADVERTISED_HOST"}  # the pod's IP, through the downward API
    assert config & secret == set()
    assert (config | secret) - SETTINGS == set(), "names the code does not read"
    assert SETTINGS - (config | secret | from_pod) == set(), "settings left out"


def test_the_config_map_loads_as_settings(overlay: tuple[str, list[Doc]]) -> None:
    name, docs = overlay
    secret = _template_secret(_config(docs)) if name == "aws" else _one(
        docs, "Secret", "covers-secrets")["stringData"]
    try:
        load(**{k.lower(): v for k, v in {**_config(docs), **secret}.items()})
    except ConfigError as exc:
        pytest.fail(f"{name}: {exc}")


def test_aws_uses_the_pod_role_and_no_static_keys() -> None:
    docs = render(K8S / "overlays" / "aws")
    account = _one(docs, "ServiceAccount", "book-covers")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::")
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "book-covers"
    text = yaml.safe_dump_all(docs)
    assert "S3_ACCESS_KEY_ID" not in text and "S3_SECRET_ACCESS_KEY" not in text
    assert not [d for d in docs if d["kind"] == "Secret"]  # created from the template
    assert _config(docs)["S3_ENDPOINT"] == ""
    assert _template_secret()["S3_ACCESS_KEY_ID"] == ""


def test_local_runs_minio_and_points_the_store_at_it() -> None:
    docs = render(K8S / "overlays" / "local")
    config = _config(docs)
    minio = _one(docs, "Service", "minio")
    assert config["S3_ENDPOINT"] == (
        f"http://minio.covers.svc.cluster.local:{minio['spec']['ports'][0]['port']}")
    assert _one(docs, "Job", "minio-bucket")
    assert all(d["metadata"].get("namespace") == "covers" for d in docs
               if d["kind"] != "Namespace")


def test_images_are_pinned(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    for doc in docs:
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get(
                "containers", []):
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), image
