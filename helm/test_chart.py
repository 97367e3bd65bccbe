"""Checks of the Helm chart with the real tools: helm lint --strict and helm template
through the Helm v4 SDK, kubernetes-validate --strict, checkov, envoy --mode validate,
and the chart's invariants. Run by scripts/test (pytest)."""
import json
import pathlib
import subprocess

import checks
import helm_python
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "hookrelay"
KUBERNETES_VERSION = checks.KUBERNETES_VERSION
VALUES = [None] + sorted(CHART.glob("ci/*.yaml"))


def load_values(path):
    return yaml.safe_load(path.read_text()) if path else None


def render(values_file):
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(load_values(values_file), name="hookrelay", namespace="hookrelay", is_install=True)
    documents = []
    for template, manifest in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        documents += [d for d in yaml.safe_load_all(manifest) if d]
    return documents


def ids(values_file):
    return values_file.name if values_file else "defaults"


@pytest.fixture(params=VALUES, ids=ids, scope="module")
def rendered(request, tmp_path_factory):
    documents = render(request.param)
    path = tmp_path_factory.mktemp("chart") / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return documents, path


def by_kind(documents, kind):
    return [d for d in documents if d["kind"] == kind]


def pod_specs(documents):
    for d in documents:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


@pytest.mark.parametrize("values_file", VALUES, ids=ids)
def test_helm_lint_strict(values_file):
    report = helm_python.lint(str(CHART), load_values(values_file), strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_every_manifest_validates_strictly(rendered):
    _, path = rendered
    passed, output = checks.kubernetes_validate(path)
    assert passed, output


def test_checkov_finds_nothing(rendered):
    _, path = rendered
    passed, output = checks.checkov(path)
    assert passed, output


def test_the_envoy_config_is_the_rendered_sidecar_and_envoy_accepts_it(rendered, tmp_path):
    documents, _ = rendered
    config = by_kind(documents, "ConfigMap")[0]["data"]["envoy.json"]
    assert json.loads(config) == json.loads((ROOT / "envoy/generated/sidecar.json").read_text()), \
        "helm/hookrelay/files/envoy.json drifted: copy envoy/generated/sidecar.json"
    path = tmp_path / "envoy.json"
    path.write_text(config)
    result = subprocess.run(["envoy", "--mode", "validate", "--disable-hot-restart", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_service_port(rendered):
    documents, _ = rendered
    (service,) = by_kind(documents, "Service")
    assert len(service["spec"]["ports"]) == 1
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_probes_reach_readyz_healthz_and_grpc_health(rendered):
    documents, _ = rendered
    (deployment,) = by_kind(documents, "Deployment")
    relay = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "relay")
    assert relay["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert relay["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert relay["readinessProbe"]["grpc"]["service"] == "hookrelay.v1.EventService"
    envoy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for container in (relay, envoy):
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= container.keys()


def test_every_container_runs_restricted_with_resources(rendered):
    documents, _ = rendered
    for name, spec in pod_specs(documents):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert context["seccompProfile"]["type"] == "RuntimeDefault", (name, container["name"])
            assert {"requests", "limits"} <= container["resources"].keys(), (name, container["name"])


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(rendered):
    documents, _ = rendered
    (job,) = by_kind(documents, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    (deployment,) = by_kind(documents, "Deployment")
    relay = deployment["spec"]["template"]["spec"]["containers"][0]
    assert relay["args"] == ["serve", "--no-migrate"], "pods never migrate themselves"


def test_helm_test_checks_readiness_and_grpc_health(rendered):
    documents, _ = rendered
    (pod,) = by_kind(documents, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "probe" and any(a.endswith("/readyz") for a in args)


def test_grace_period_matches_the_server(rendered):
    documents, _ = rendered
    (deployment,) = by_kind(documents, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    relay = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in relay["env"]}
    grace = spec["terminationGracePeriodSeconds"]
    assert env["HOOKRELAY_SHUTDOWN_GRACE"] == f"{grace - 5}s"
    assert env["HOOKRELAY_HTTP_ADDR"].startswith("127.0.0.1:") and env["HOOKRELAY_GRPC_ADDR"].startswith("127.0.0.1:")


def test_scaling_disruption_spread_and_network_policy(rendered):
    documents, _ = rendered
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"):
        assert by_kind(documents, kind), kind
    (deployment,) = by_kind(documents, "Deployment")
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_secrets_are_only_referenced():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("database", "secretKey", "jwtKey", "signupToken"):
        assert set(values[key]) == {"existingSecret", "secretKey"}, key
    text = (CHART / "values.yaml").read_text().lower()
    for forbidden in ("postgres://", "postgresql://", "begin private key", "password:"):
        assert forbidden not in text


def test_the_schema_rejects_unknown_keys():
    chart = helm_python.Chart.load(str(CHART))
    with pytest.raises(helm_python.HelmError):
        chart.render({"replicaCont": 3}, name="hookrelay", namespace="hookrelay", is_install=True)
    with pytest.raises(helm_python.HelmError):
        chart.render({"image": {"tagg": "x"}}, name="hookrelay", namespace="hookrelay", is_install=True)


def test_workload_identity_annotation():
    documents = render(CHART / "ci" / "production-values.yaml")
    (account,) = by_kind(documents, "ServiceAccount")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
