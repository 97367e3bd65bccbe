"""Checks of the agent's chart (helm/hookrelay-agent) with the real tools, like the
server's: helm lint --strict and helm template through the Helm v4 SDK,
kubernetes-validate --strict, checkov, and the chart's invariants."""
import pathlib

import checks
import helm_python
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "hookrelay-agent"
KUBERNETES_VERSION = checks.KUBERNETES_VERSION
VALUES = sorted(CHART.glob("ci/*.yaml"))
# The minimum a user must give; the rest are the chart's defaults.
MINIMAL = {
    "server": "https://relay.example.com",
    "clientId": "hrc_0123456789abcdef0123456789abcdef",
    "clientSecret": {"existingSecret": "hookrelay-agent"},
    "consumer": "ci",
    "target": "http://jenkins:8080/github-webhook/",
}
CASES = [("minimal", MINIMAL)] + [(p.name, yaml.safe_load(p.read_text())) for p in VALUES]


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name="agent", namespace="ci", is_install=True)
    documents = []
    for template, manifest in sorted(rendered.items()):
        documents += [d for d in yaml.safe_load_all(manifest) if d]
    return documents


@pytest.fixture(params=CASES, ids=[name for name, _ in CASES], scope="module")
def rendered(request, tmp_path_factory):
    documents = render(request.param[1])
    path = tmp_path_factory.mktemp("agent") / "rendered.yaml"
    # The ServiceMonitor is a CRD kubernetes-validate has no schema for; it is checked below.
    path.write_text(yaml.safe_dump_all([d for d in documents if d["kind"] != "ServiceMonitor"], sort_keys=False))
    return documents, path


def by_kind(documents, kind):
    return [d for d in documents if d["kind"] == kind]


@pytest.mark.parametrize("values", [v for _, v in CASES], ids=[n for n, _ in CASES])
def test_helm_lint_strict(values):
    report = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_required_values_are_named_when_missing():
    with pytest.raises(Exception, match=r"set (clientId|clientSecret|consumer|server|target)"):
        render({})


def test_every_manifest_validates_strictly(rendered):
    _, path = rendered
    passed, output = checks.kubernetes_validate(path)
    assert passed, output


def test_checkov_finds_nothing(rendered):
    documents, _ = rendered
    path = rendered[1].with_name("all.yaml")
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    passed, output = checks.checkov(path)
    assert passed, output


def test_probes_restricted_security_and_the_secret_by_reference(rendered):
    documents, _ = rendered
    (deployment,) = by_kind(documents, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] and context["runAsNonRoot"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    env = {e["name"]: e for e in container["env"]}
    assert "HOOKRELAY_CLIENT_SECRET" not in env, "the secret is mounted, never a value"
    if "HOOKRELAY_SUBJECT_TOKEN_FILE" in env:
        return  # the secretless case, checked below
    assert env["HOOKRELAY_CLIENT_SECRET_FILE"]["value"].startswith("/var/run/secrets/")
    assert spec["volumes"][0]["secret"]["secretName"] == "hookrelay-agent"


SECRETLESS = {k: v for k, v in MINIMAL.items() if k not in ("clientId", "clientSecret")}


def test_a_projected_service_account_token_replaces_the_client_secret():
    values = {**SECRETLESS, "projectedServiceAccountToken": {"enabled": True, "audience": "hookrelay-acme"}}
    (deployment,) = by_kind(render(values), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "HOOKRELAY_CLIENT_ID" not in env and "HOOKRELAY_CLIENT_SECRET_FILE" not in env
    (volume,) = spec["volumes"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {"path": "token", "audience": "hookrelay-acme", "expirationSeconds": 3600}
    (mount,) = container["volumeMounts"]
    assert env["HOOKRELAY_SUBJECT_TOKEN_FILE"] == f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
    # The API token stays unmounted: only the projected one, for hookrelay's audience.
    assert spec["automountServiceAccountToken"] is False
    with pytest.raises(Exception, match=r"set projectedServiceAccountToken.audience"):
        render({**SECRETLESS, "projectedServiceAccountToken": {"enabled": True}})
    with pytest.raises(Exception, match=r"not both"):
        render({**MINIMAL, "projectedServiceAccountToken": {"enabled": True, "audience": "a"}})


def test_network_policy_allows_only_the_relay_the_target_and_dns(rendered):
    documents, _ = rendered
    (policy,) = by_kind(documents, "NetworkPolicy")
    ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 8080], ports
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_the_service_monitor_scrapes_the_metrics_port():
    values = yaml.safe_load((CHART / "ci/cluster-values.yaml").read_text())
    documents = render(values)
    (monitor,) = by_kind(documents, "ServiceMonitor")
    (service,) = by_kind(documents, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert not by_kind(render(MINIMAL), "ServiceMonitor")


def test_values_say_what_two_replicas_with_one_consumer_do():
    text = (CHART / "values.yaml").read_text()
    assert "replicaCount" in text and "delivered once per replica" in text


def test_traces_to_a_collector_open_egress_to_it_only_when_asked():
    values = dict(
        MINIMAL,
        config={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
                "HOOKRELAY_SEND_TRACEPARENT": "true"},
        networkPolicy={"otlp": {"enabled": True, "port": 4318, "cidr": "10.8.0.0/16"}},
    )
    documents = render(values)
    (policy,) = by_kind(documents, "NetworkPolicy")
    otlp = [r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 4318]
    assert otlp and otlp[0]["to"] == [{"ipBlock": {"cidr": "10.8.0.0/16"}}]
    (deployment,) = by_kind(documents, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert env["HOOKRELAY_SEND_TRACEPARENT"] == "true"
