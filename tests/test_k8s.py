"""The Kubernetes manifests (deploy/k8s): each overlay rendered by kustomize, every object validated against the
Kubernetes API's JSON schemas, and the numbers in them checked against the service and the image.

Rendering: `kustomize build`, else `kubectl kustomize` (kubectl 1.21 and later embed kustomize 4 or 5; the one on our
machines comes with the Google Cloud CLI's `kubectl` package). Validation: the PyPI package `kubernetes-validate`,
which carries the API schemas of each Kubernetes release and works offline, in strict mode (unknown fields are
errors, as `kubectl apply --validate=strict` has them). A broken overlay written to a temp folder proves that the
validator does refuse what it should.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from s2d.service.server import UVICORN_GRACE_S
from s2d.service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes release the manifests are for: autoscaling/v2, policy/v1, PDB unhealthyPodEvictionPolicy.
K8S_VERSION = "1.30.0"
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install 'kubernetes-validate>=1.30')"
)


@functools.cache
def kustomize() -> list[str] | str:
    """The command that renders a kustomization folder, or why there is none."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "neither kustomize nor kubectl is on PATH (Debian: the Google Cloud CLI `kubectl` package)"
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Kustomize Version: v(\d+)", version)
    if not match or int(match.group(1)) < 4:  # Debian's kubernetes-client 1.20 embeds kustomize 2 (no `patches:`)
        return f"kubectl's kustomize is older than v4: {version.strip()!r}"
    return [kubectl, "kustomize"]


def build(folder: Path) -> list[dict]:
    command = kustomize()
    if isinstance(command, str):
        pytest.skip(command)
    result = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises ValidationError with the failing path


@functools.cache
def rendered(overlay: str) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in build(K8S / "overlays" / overlay)}


def container(objects: dict) -> dict:
    (only,) = objects["Deployment", "s2d"]["spec"]["template"]["spec"]["containers"]
    return only


def env(objects: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(objects)["env"]}


# ---------------------------------------------------------------------------------------------------------------------
# Rendered and valid


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_validates(overlay):
    objects = rendered(overlay)
    for obj in objects.values():
        validate(obj)
    assert set(objects) == {
        ("Deployment", "s2d"), ("Service", "s2d"), ("Service", "s2d-stream"), ("Ingress", "s2d"),
        ("Ingress", "s2d-stream"), ("PodDisruptionBudget", "s2d"), ("HorizontalPodAutoscaler", "s2d"),
        ("PersistentVolumeClaim", "s2d-models"),
    }  # fmt: skip


@pytest.mark.parametrize("example", ["secret.example.yaml", "prometheus-adapter/config.yaml"])
def test_examples_validate(example):
    (obj,) = list(yaml.safe_load_all((K8S / example).read_text()))
    validate(obj)


BROKEN = {
    "replicas as a word": ({"spec": {"replicas": "two"}}, ["spec", "replicas"]),
    "a misspelt container field": (
        {"spec": {"template": {"spec": {"containers": [{"name": "s2d", "imagePullPolcy": "Always"}]}}}},
        ["spec", "template", "spec", "containers", 0],
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_manifest_is_refused(case, tmp_path):
    patch, path = BROKEN[case]
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s2d"}, **patch}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],  # kustomize wants a relative path
        "patches": [{"patch": yaml.safe_dump(patch)}],
    }))  # fmt: skip
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build(tmp_path)}
    for key, obj in objects.items():
        if key != ("Deployment", "s2d"):
            validate(obj)  # the rest of the overlay is still valid
    with pytest.raises(kubernetes_validate.ValidationError) as refused:
        validate(objects["Deployment", "s2d"])
    assert list(refused.value.path) == path, refused.value.message


# ---------------------------------------------------------------------------------------------------------------------
# What the objects say agrees with the service and the image


def test_deployment_probes_and_graceful_stop():
    objects = rendered("cpu")
    pod = objects["Deployment", "s2d"]["spec"]["template"]["spec"]
    main = container(objects)
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["ports"] == [{"name": "http", "containerPort": 8000}]
    command = main["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and 2 <= int(command[1]) <= 15
    grace = float(env(objects)["S2D_SHUTDOWN_GRACE_S"]["value"])
    assert grace == DEFAULTS["shutdown_grace_s"]
    # preStop runs inside the termination grace period; then the drain, then uvicorn's own shutdown.
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + grace + UVICORN_GRACE_S


def test_pod_security_matches_the_image():
    objects = rendered("cpu")
    pod = objects["Deployment", "s2d"]["spec"]["template"]["spec"]
    uids = set(re.findall(r"useradd .*--uid (\d+)", (REPO / "Dockerfile").read_text()))
    assert uids == {str(pod["securityContext"]["runAsUser"])} == {"10001"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container(objects)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # uploads are spooled to the system temp folder
    models = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    assert mounts["/models"]["readOnly"] is True and models["readOnly"] is True
    assert objects["PersistentVolumeClaim", models["claimName"]]["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert env(objects)["S2D_MODEL_STORE"]["value"] == "/models"
    key = env(objects)["S2D_API_KEY"]["valueFrom"]["secretKeyRef"]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert key["name"] == example["metadata"]["name"] and key["key"] in example["stringData"]
    assert not key.get("optional"), "without its Secret the service must not start open"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_image_and_providers(overlay):
    objects = rendered(overlay)
    assert container(objects)["image"] == f"s2d:{overlay}"
    assert env(objects)["S2D_PROVIDERS"]["value"] == {"cpu": "cpu", "gpu": "cuda,cpu"}[overlay]
    pod = objects["Deployment", "s2d"]["spec"]["template"]["spec"]
    limits = container(objects)["resources"]["limits"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1 and env(objects)["S2D_DEVICE_ID"]["value"] == "0"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    else:
        assert "nvidia.com/gpu" not in limits and "nodeSelector" not in pod and "tolerations" not in pod


def test_ingress_limits_and_stream_affinity():
    objects = rendered("cpu")
    rest, stream = objects["Ingress", "s2d"]["metadata"], objects["Ingress", "s2d-stream"]["metadata"]
    a = "nginx.ingress.kubernetes.io/"
    rest, stream = rest["annotations"], stream["annotations"]
    assert int(rest[a + "proxy-body-size"].removesuffix("m")) * 2**20 == DEFAULTS["max_upload_bytes"]
    assert rest[a + "proxy-request-buffering"] == "off"
    assert DEFAULTS["request_timeout_s"] < int(rest[a + "proxy-read-timeout"]) <= DEFAULTS["request_timeout_s"] + 30
    assert int(stream[a + "proxy-read-timeout"]) > 10 * DEFAULTS["stream_idle_timeout_s"]
    assert stream[a + "affinity"] == "cookie" and stream[a + "session-cookie-path"] == "/v1/stream"
    assert not any(key.startswith(a + "affinity") for key in rest)  # REST stays balanced
    (path,) = objects["Ingress", "s2d-stream"]["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/v1/stream" and path["pathType"] == "Exact"
    # The stream Service reaches the same pods as the REST one.
    labels = objects["Deployment", "s2d"]["spec"]["template"]["metadata"]["labels"]
    for name in ("s2d", "s2d-stream"):
        selector = objects["Service", name]["spec"]["selector"]
        assert selector.items() <= labels.items()
    assert path["backend"]["service"]["name"] == "s2d-stream"


def test_autoscaler_metrics_come_from_the_service_through_the_adapter():
    from prometheus_client import REGISTRY

    import s2d.service.metrics  # noqa: F401 - registers the service's metrics

    objects = rendered("cpu")
    hpa = objects["HorizontalPodAutoscaler", "s2d"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "s2d"}
    cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert {"type": "Resource", "resource": cpu} in hpa["metrics"]
    pods = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert "s2d_inference_queue_clips" in pods
    exported = {metric.name for metric in REGISTRY.collect()}
    config_map = yaml.safe_load((K8S / "prometheus-adapter/config.yaml").read_text())
    adapter = yaml.safe_load(config_map["data"]["config.yaml"])
    rules = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    for name in pods:
        assert name in exported, f"{name} is not a metric of the service"
        assert rules[name]["seriesQuery"].startswith(f"{name}{{")
        assert set(rules[name]["resources"]["overrides"]) == {"namespace", "pod"}
    # The scrape job example gives the series the namespace and pod labels the rules map.
    scrape = yaml.safe_load((K8S / "prometheus-adapter/prometheus.yml").read_text())["scrape_configs"][0]
    assert {r.get("target_label") for r in scrape["relabel_configs"]} >= {"namespace", "pod"}
    assert rendered("gpu")["HorizontalPodAutoscaler", "s2d"]["spec"]["maxReplicas"] <= hpa["maxReplicas"]


def test_disruption_budget_keeps_pods_serving():
    objects = rendered("cpu")
    pdb = objects["PodDisruptionBudget", "s2d"]["spec"]
    labels = objects["Deployment", "s2d"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
    assert objects["HorizontalPodAutoscaler", "s2d"]["spec"]["minReplicas"] >= 2  # so one may always be disrupted
