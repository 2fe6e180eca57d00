"""The Kubernetes manifests, checked offline: each document against the
Kubernetes OpenAPI schemas, and each against what the code really reads
(setting names, ports, probe paths, the shutdown grace)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gptmini_graphql.drain import hard_stop_seconds
from gptmini_graphql.settings import Settings

ROOT = Path(__file__).parents[1] / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in ROOT.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(ROOT.rglob("kustomization.yaml"))
SETTINGS = {name.upper() for name in Settings.model_fields}
# Read by the libraries we run on, not by our settings.
LIBRARY_VARIABLES = {"FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR"}
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def everything() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in everything() if d["kind"] == kind}


def pods() -> list[dict[str, Any]]:
    workloads = {**of_kind("Deployment"), **of_kind("Job")}
    return [workload["spec"]["template"]["spec"] for workload in workloads.values()]


def containers() -> list[dict[str, Any]]:
    return [container for pod in pods() for container in pod["containers"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: p.parent.name)
def test_each_kustomization_applies_its_folder(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    listed = kustomization["resources"]
    for resource in listed:
        assert (path.parent / resource).exists(), resource
    # Every manifest beside it is applied, except the examples to copy.
    beside = {
        p.name
        for p in path.parent.glob("*.yaml")
        if p.name != path.name and not p.name.endswith(".example.yaml")
    }
    assert beside == {r for r in listed if r.endswith(".yaml")}


def test_every_variable_is_one_the_code_reads() -> None:
    names = set()
    for config in of_kind("ConfigMap").values():
        names |= set(config["data"])
    for secret in of_kind("Secret").values():
        names |= set(secret["stringData"])
    for container in containers():
        if container["image"].startswith("gptmini-graphql"):  # not postgres'
            names |= {variable["name"] for variable in container.get("env", ())}
    assert names - SETTINGS - LIBRARY_VARIABLES == set()


def test_the_api_is_probed_where_it_answers() -> None:
    api = of_kind("Deployment")["gptmini-api"]["spec"]["template"]["spec"]
    (container,) = api["containers"]
    port = container["ports"][0]["containerPort"]
    config = of_kind("ConfigMap")["gptmini-config"]["data"]
    assert port == int(config["PORT"]) == Settings.model_fields["port"].default
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Kubernetes' grace covers the streams' grace and the cut after it.
    grace = float(config["SHUTDOWN_GRACE_SECONDS"])
    assert api["terminationGracePeriodSeconds"] > hard_stop_seconds(grace)


def test_the_api_finds_the_model_service_on_its_port() -> None:
    llm = of_kind("Deployment")["gptmini-llm"]["spec"]["template"]["spec"]
    (container,) = llm["containers"]
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = of_kind("Service")["gptmini-llm"]
    config = of_kind("ConfigMap")["gptmini-config"]["data"]
    assert config["LOCAL_MODEL_URL"] == f"http://gptmini-llm:{port}"
    assert service["spec"]["ports"][0]["port"] == port


def test_every_container_runs_unprivileged_on_a_read_only_root() -> None:
    for pod in pods():
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"]["memory"]


def test_only_the_api_reaches_the_model_redis_and_postgres() -> None:
    policies = of_kind("NetworkPolicy")
    for name in ("gptmini-llm", "gptmini-redis", "gptmini-postgres"):
        (rule,) = policies[name]["spec"]["ingress"]
        (source,) = rule["from"]
        assert source["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "gptmini-api"
        }


def test_the_migrate_job_runs_the_migrations_the_api_leaves_to_it() -> None:
    (container,) = of_kind("Job")["gptmini-migrate"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["command"][-2:] == ["db", "upgrade"]
    config = of_kind("ConfigMap")["gptmini-config"]["data"]
    assert config["DATABASE_MIGRATE_ON_START"] == "false"
