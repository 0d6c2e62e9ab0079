"""deploy/k8s/: every manifest parses and has the kind and apiVersion it should (and the
core ones validate against Kubernetes' own schemas, kubernetes-validate); the autoscalers
target the Deployment; the metric they scale on is one a live server's /metrics exposes; the
probes ask endpoints the server has; container port, Service targetPort and the image's
--port agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.test_dockerfile import DOCKERFILE, instructions
from tests.unit.deploy.test_metric_names import exposed, metric_names  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KINDS = {
    "deployment.yaml": ("apps/v1", "Deployment"),
    "service.yaml": ("v1", "Service"),
    "keda-scaledobject.yaml": ("keda.sh/v1alpha1", "ScaledObject"),
    "hpa.yaml": ("autoscaling/v2", "HorizontalPodAutoscaler"),
}


def manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: one object per file"
    return docs[0]


def _container() -> dict:
    (container,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


def test_every_manifest_has_its_kind():
    assert {p.name for p in K8S.glob("*.yaml")} == set(KINDS)
    for name, (api, kind) in KINDS.items():
        m = manifest(name)
        assert (m["apiVersion"], m["kind"]) == (api, kind), name
        assert m["metadata"]["name"] == "tunelab", name


def test_core_manifests_validate_against_kubernetes_schemas():
    kv = pytest.importorskip(
        "kubernetes_validate", reason="schema check needs pip install kubernetes-validate"
    )
    for name in ("deployment.yaml", "service.yaml", "hpa.yaml"):  # KEDA's CRD has no schema here
        kv.validate(manifest(name), kv.latest_version(), strict=True)
    broken = manifest("deployment.yaml")
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_selectors_and_targets_agree():
    dep = manifest("deployment.yaml")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert manifest("service.yaml")["spec"]["selector"].items() <= pod_labels.items()
    for name in ("keda-scaledobject.yaml", "hpa.yaml"):
        ref = manifest(name)["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"]), name
        assert ref["apiVersion"] == dep["apiVersion"], name


def test_ports_agree_with_the_image():
    steps = instructions(DOCKERFILE.read_text())
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    image_port = int(entry[entry.index("--port") + 1])
    (port,) = _container()["ports"]
    assert port["containerPort"] == image_port
    assert "--port" not in _container()["args"]  # the entrypoint's port stays the one
    (svc_port,) = manifest("service.yaml")["spec"]["ports"]
    target = svc_port["targetPort"]
    assert target in (image_port, port["name"]), target
    probes = [_container()[p] for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    assert all(p["httpGet"]["port"] in (image_port, port["name"]) for p in probes)
    annotations = manifest("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == image_port


def test_probes_and_keys_use_what_the_server_has():
    from tunelab.serve import ModelHolder, ServeSettings, create_app
    from tunelab.serve.auth import KeyChecker

    paths = create_app(ServeSettings(), ModelHolder("x"), KeyChecker({})).openapi()["paths"]
    c = _container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"  # 503 while the model loads
    assert c["livenessProbe"]["httpGet"]["path"] in paths
    annotations = manifest("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in paths
    keys_arg = c["args"][c["args"].index("--keys-file") + 1]
    mount = next(m for m in c["volumeMounts"] if keys_arg.startswith(m["mountPath"] + "/"))
    volume = next(
        v
        for v in manifest("deployment.yaml")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] and mount["readOnly"] is True
    grace = manifest("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > ServeSettings().graceful_timeout  # in-flight requests finish first


def test_autoscalers_scale_on_the_queue_depth_the_server_exposes(exposed):  # noqa: F811
    (trigger,) = manifest("keda-scaledobject.yaml")["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert float(trigger["metadata"]["threshold"]) > 0
    used = metric_names(trigger["metadata"]["query"])
    assert used == {"tunelab_queue_depth"}
    (metric,) = manifest("hpa.yaml")["spec"]["metrics"]
    used.add(metric["pods"]["metric"]["name"])
    assert used <= exposed, used - exposed
