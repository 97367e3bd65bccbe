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
    return render_values(load_values(values_file))


def render_values(values):
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name="hookrelay", namespace="hookrelay", is_install=True)
    documents = []
    for template, manifest in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        documents += [d for d in yaml.safe_load_all(manifest) if d]
    return documents


def ids(values_file):
    return values_file.name if values_file else "defaults"


# Google's custom resources, which kubernetes-validate has no schema for: checked by
# their own tests below (fields as Google's GKE documentation defines them).
GKE_KINDS = {"BackendConfig", "FrontendConfig", "ManagedCertificate", "Gateway", "HTTPRoute",
             "GCPBackendPolicy", "HealthCheckPolicy", "PrometheusRule"}


@pytest.fixture(params=VALUES, ids=ids, scope="module")
def rendered(request, tmp_path_factory):
    documents = render(request.param)
    path = tmp_path_factory.mktemp("chart") / "rendered.yaml"
    path.write_text(yaml.safe_dump_all([d for d in documents if d["kind"] not in GKE_KINDS], sort_keys=False))
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


def backend_tls(documents):
    """Whether Envoy serves TLS on the pod port (behind Google's load balancer)."""
    (deployment,) = by_kind(documents, "Deployment")
    return any(v["name"] == "backend-tls" for v in deployment["spec"]["template"]["spec"]["volumes"])


def test_the_envoy_config_is_the_rendered_sidecar_and_envoy_accepts_it(rendered, tmp_path):
    documents, _ = rendered
    config = by_kind(documents, "ConfigMap")[0]["data"]["envoy.json"]
    preset = "sidecar-tls" if backend_tls(documents) else "sidecar"
    assert json.loads(config) == json.loads((ROOT / f"envoy/generated/{preset}.json").read_text()), \
        f"the chart's copy drifted: copy envoy/generated/{preset}.json into helm/hookrelay/files/"
    if preset == "sidecar-tls":
        # The certificate the pod mounts, stood in for by one made here.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hookrelay",
                        "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")], check=True, capture_output=True)
        config = config.replace("/etc/envoy/tls/", f"{tmp_path}/")
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
    envoy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    if backend_tls(documents):
        # The pod port serves TLS: HTTPS probes (the kubelet's gRPC probes are plaintext only).
        assert relay["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTPS"}
        for probe in (relay["livenessProbe"], relay["startupProbe"], envoy["readinessProbe"]):
            assert probe["httpGet"]["scheme"] == "HTTPS"
    else:
        assert relay["readinessProbe"]["grpc"]["service"] == "hookrelay.v1.EventService"
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


def test_the_relay_rolls_with_old_and_new_pods_side_by_side(rendered):
    documents, _ = rendered
    (deployment,) = by_kind(documents, "Deployment")
    rolling = deployment["spec"]["strategy"]
    assert rolling["type"] == "RollingUpdate"
    assert rolling["rollingUpdate"]["maxUnavailable"] == 0 and rolling["rollingUpdate"]["maxSurge"] >= 1
    relay = deployment["spec"]["template"]["spec"]["containers"][0]
    assert relay["args"] == ["serve", "--no-migrate"], "pods never migrate; the hook Job does, first"
    probe = relay["readinessProbe"]
    assert (
        probe.get("httpGet", {}).get("path") == "/readyz"
        or probe.get("grpc", {}).get("service") == "hookrelay.v1.EventService"
    ), "readiness (the database reachable) gates traffic"
    (job,) = [d for d in by_kind(documents, "Job") if d["metadata"]["name"].endswith("-migrate")]
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) >= {"pre-install", "pre-upgrade"}
    (budget,) = by_kind(documents, "PodDisruptionBudget")
    replicas = deployment["spec"].get("replicas") or by_kind(documents, "HorizontalPodAutoscaler")[0]["spec"]["minReplicas"]
    assert budget["spec"]["maxUnavailable"] == 1 and replicas >= 2, "one replica stays"


def test_secrets_are_only_referenced():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("database", "secretKey", "jwtKey", "signupToken"):
        references = {"existingSecret", "secretKey"} | ({"previousExistingSecret"} if key == "secretKey" else set())
        assert set(values[key]) == references, key
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


def env_of(documents, name):
    (deployment,) = by_kind(documents, "Deployment")
    relay = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "relay")
    return next((e.get("value") for e in relay["env"] if e["name"] == name), None)


def seconds(duration):
    """`3000s`, `50m` or `1h` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]]


def test_http2_to_the_backend_always_comes_with_tls_in_envoy(rendered):
    documents, _ = rendered
    (service,) = by_kind(documents, "Service")
    http2 = "HTTP2" in (service["metadata"].get("annotations") or {}).get("cloud.google.com/app-protocols", "") \
        or service["spec"]["ports"][0].get("appProtocol") == "HTTP2"
    assert http2 == backend_tls(documents), "Google's load balancer speaks HTTP/2 to a backend only over TLS"
    if http2:
        config = json.loads(by_kind(documents, "ConfigMap")[0]["data"]["envoy.json"])
        chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
        assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls"
        (deployment,) = by_kind(documents, "Deployment")
        envoy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
        assert {"name": "backend-tls", "mountPath": "/etc/envoy/tls", "readOnly": True} in envoy["volumeMounts"]
        secrets = by_kind(documents, "Secret")
        assert secrets and secrets[0]["type"] == "kubernetes.io/tls"


def test_the_load_balancer_outlives_every_stream_and_checks_readyz(rendered):
    documents, _ = rendered
    policies = by_kind(documents, "BackendConfig") + by_kind(documents, "GCPBackendPolicy")
    if not policies:
        assert env_of(documents, "HOOKRELAY_MAX_STREAM_AGE") is None
        return
    (policy,) = policies
    spec = policy["spec"].get("default", policy["spec"])
    max_age = seconds(env_of(documents, "HOOKRELAY_MAX_STREAM_AGE"))
    assert spec["timeoutSec"] >= 3600, "an hour or more"
    assert spec["timeoutSec"] > max_age, "the relay ends streams before the load balancer cuts them"
    (health,) = [d["spec"] for d in documents if d["kind"] in ("BackendConfig", "HealthCheckPolicy")]
    check = health.get("healthCheck") or health["default"]["config"]["http2HealthCheck"]
    assert check["requestPath"] == "/readyz"
    (deployment,) = by_kind(documents, "Deployment")
    envoy = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    assert check["port"] == envoy["ports"][0]["containerPort"]
    kind = health.get("healthCheck", {}).get("type") or health["default"]["config"]["type"]
    assert kind == "HTTP2"


def test_the_ingress_names_the_static_ip_certificate_and_redirect_it_creates(rendered):
    documents, _ = rendered
    if not by_kind(documents, "BackendConfig"):
        return
    (ingress,) = by_kind(documents, "Ingress")
    (service,) = by_kind(documents, "Service")
    (certificate,) = by_kind(documents, "ManagedCertificate")
    (frontend,) = by_kind(documents, "FrontendConfig")
    (backend,) = by_kind(documents, "BackendConfig")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "gce"
    assert annotations["kubernetes.io/ingress.global-static-ip-name"] == TERRAFORM_STATIC_IP_NAME
    assert annotations["networking.gke.io/managed-certificates"] == certificate["metadata"]["name"]
    assert annotations["networking.gke.io/v1beta1.FrontendConfig"] == frontend["metadata"]["name"]
    assert frontend["spec"]["redirectToHttps"]["enabled"] is True
    assert certificate["spec"]["domains"] == [ingress["spec"]["rules"][0]["host"]]
    service_annotations = service["metadata"]["annotations"]
    assert json.loads(service_annotations["cloud.google.com/backend-config"]) == {"default": backend["metadata"]["name"]}
    assert json.loads(service_annotations["cloud.google.com/app-protocols"]) == {"http": "HTTP2"}
    assert json.loads(service_annotations["cloud.google.com/neg"]) == {"ingress": True}


def test_the_gateway_routes_to_the_service_with_its_policies(rendered):
    documents, _ = rendered
    if not by_kind(documents, "Gateway"):
        return
    (gateway,) = by_kind(documents, "Gateway")
    (route,) = by_kind(documents, "HTTPRoute")
    (service,) = by_kind(documents, "Service")
    assert gateway["spec"]["gatewayClassName"] == "gke-l7-global-external-managed"
    assert gateway["spec"]["addresses"] == [{"type": "NamedAddress", "value": TERRAFORM_STATIC_IP_NAME}]
    assert gateway["metadata"]["annotations"]["networking.gke.io/certmap"]
    assert route["spec"]["parentRefs"][0]["name"] == gateway["metadata"]["name"]
    assert route["spec"]["rules"][0]["backendRefs"][0] == {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}
    for kind in ("GCPBackendPolicy", "HealthCheckPolicy"):
        (policy,) = by_kind(documents, kind)
        assert policy["spec"]["targetRef"] == {"group": "", "kind": "Service", "name": service["metadata"]["name"]}
    assert not by_kind(documents, "Ingress"), "one way in"


# The name terraform/examples/gke reserves the global address under (its default).
TERRAFORM_STATIC_IP_NAME = "hookrelay"


def test_the_alerts_and_dashboard_are_the_checked_files(rendered, tmp_path):
    documents, _ = rendered
    rules = by_kind(documents, "PrometheusRule")
    dashboards = [d for d in by_kind(documents, "ConfigMap") if "hookrelay.json" in d.get("data", {})]
    monitoring = CHART / "files" / "monitoring"
    for rule in rules:
        assert rule["spec"] == yaml.safe_load((monitoring / "alerts.yaml").read_text())
        # What the Prometheus Operator would load is what promtool accepts.
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    for dashboard in dashboards:
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(dashboard["data"]["hookrelay.json"]) == json.loads((monitoring / "dashboard.json").read_text())


def test_a_change_of_key_encryption_key_mounts_both_keys():
    documents = render(CHART / "ci" / "production-values.yaml")
    assert env_of(documents, "HOOKRELAY_SECRET_KEY_FILE") == "/var/run/secrets/hookrelay/secret-key/key"
    assert env_of(documents, "HOOKRELAY_PREVIOUS_SECRET_KEY_FILE") == "/var/run/secrets/hookrelay/previous-secret-key/key"
    (deployment,) = by_kind(documents, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secret-key"]["secret"]["secretName"] == "hookrelay-secret-key-2"
    assert volumes["previous-secret-key"]["secret"]["secretName"] == "hookrelay-secret-key"
    assert env_of(render(None), "HOOKRELAY_PREVIOUS_SECRET_KEY_FILE") is None


def test_behind_googles_load_balancer_each_client_counts_on_its_own():
    """Envoy, Google's front ends and the balancer's address are trusted in
    X-Forwarded-For, so per-source rate limits see the client (the documented
    Terraform path sets the address)."""
    def proxies(values):
        deployment = next(d for d in render_values(values) if d["kind"] == "Deployment")
        relay = deployment["spec"]["template"]["spec"]["containers"][0]
        return next(e["value"] for e in relay["env"] if e["name"] == "HOOKRELAY_TRUSTED_PROXIES").split(",")

    assert proxies(None) == ["127.0.0.1", "::1"], "without a load balancer, only Envoy"
    ingress = proxies(load_values(CHART / "ci/gke-ingress-values.yaml"))
    assert ingress == ["127.0.0.1", "::1", "35.191.0.0/16", "130.211.0.0/22", "203.0.113.10"]
    gateway = proxies(load_values(CHART / "ci/gke-gateway-values.yaml"))
    assert gateway[:4] == ["127.0.0.1", "::1", "35.191.0.0/16", "130.211.0.0/22"]
    terraform = (ROOT / "terraform/examples/gke/outputs.tf").read_text()
    assert "loadBalancerAddress = google_compute_global_address.relay.address" in terraform
