"""Checks of terraform/ with the real tools that run here (terraform fmt, checkov) and
the conventions the modules promise. `terraform init/validate` need the google
provider, which cannot be downloaded here. Run by scripts/test (pytest)."""
import pathlib
import re
import shutil
import subprocess

import hcl2

TERRAFORM = pathlib.Path(__file__).resolve().parent
MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
EXAMPLES = sorted(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())


def load(path):
    with open(path) as f:
        return hcl2.load(f)


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    assert terraform, "terraform is not on PATH (it is preinstalled on these machines)"
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", str(TERRAFORM)], capture_output=True, text=True)
    assert result.returncode == 0, "terraform fmt would change:\n" + result.stdout + result.stderr


def test_checkov_finds_nothing():
    result = subprocess.run(
        ["checkov", "-d", str(TERRAFORM), "--framework", "terraform", "--skip-download", "--compact", "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_skip_has_a_written_reason():
    for path in TERRAFORM.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                assert re.search(r"#checkov:skip=CKV2?_[A-Z]+_\d+:\S.{15,}", line), f"{path}: {line.strip()}"


def test_each_module_and_example_has_its_files():
    for directory in MODULES:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (directory / name).exists(), f"{directory.name}/{name}"
    for directory in EXAMPLES:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (directory / name).exists(), f"examples/{directory.name}/{name}"


def test_variables_are_typed_described_and_validated():
    for directory in MODULES + EXAMPLES:
        for variable in load(directory / "variables.tf").get("variable", []):
            for name, spec in variable.items():
                where = f"{directory.relative_to(TERRAFORM)}: {name}"
                assert "type" in spec, f"{where} has no type"
                assert spec.get("description"), f"{where} has no description"
                if directory in EXAMPLES and "bool" not in str(spec["type"]):
                    assert "validation" in spec, f"{where} has no validation"


def test_outputs_are_described():
    for directory in MODULES + EXAMPLES:
        for output in load(directory / "outputs.tf").get("output", []):
            for name, spec in output.items():
                assert spec.get("description"), f"{directory.name}: output {name}"


def test_examples_pin_the_google_provider_and_use_only_local_modules():
    for directory in EXAMPLES:
        versions = (directory / "versions.tf").read_text()
        assert re.search(r'google\s*=\s*\{[^}]*version\s*=\s*"~>\s*\d+\.\d+"', versions, re.S), directory.name
        for module in load(directory / "main.tf").get("module", []):
            for name, spec in module.items():
                source = spec["source"][0] if isinstance(spec["source"], list) else spec["source"]
                assert source.startswith("../../modules/"), f"{directory.name}: {name} is not a local module"


def test_cloud_run_serves_h2c_for_an_hour_with_a_warm_instance_and_the_rendered_envoy_config():
    text = (TERRAFORM / "modules/cloud-run/main.tf").read_text()
    assert re.search(r'name\s*=\s*"h2c"', text)
    assert re.search(r'timeout\s*=\s*"3600s"', text)
    assert "envoy/generated/sidecar.json" in text, "the Envoy config comes from envoy/render's output"
    variables = (TERRAFORM / "modules/cloud-run/variables.tf").read_text()
    assert "var.min_instances >= 1" in variables


def test_cloud_run_moves_traffic_to_the_new_revision_once_it_is_ready():
    resources = load(TERRAFORM / "modules/cloud-run/main.tf")["resource"]
    (service,) = [r["google_cloud_run_v2_service"]["this"] for r in resources if "google_cloud_run_v2_service" in r]
    def one(value):  # python-hcl2 wraps some values in a list
        return value[0] if isinstance(value, list) else value

    traffic = one(service["traffic"])
    assert one(traffic["type"]) == "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST" and one(traffic["percent"]) == 100
    relay = [c for c in one(service["template"])["containers"] if one(c["name"]) != "envoy"][0]
    probe = one(one(relay["startup_probe"])["http_get"])
    assert one(probe["path"]) == "/readyz", "traffic waits for readiness"


def test_cloud_sql_is_private_with_backups_and_pitr():
    text = (TERRAFORM / "modules/cloud-sql/main.tf").read_text()
    assert re.search(r"ipv4_enabled\s*=\s*false", text)
    assert re.search(r"point_in_time_recovery_enabled\s*=\s*true", text)
    assert re.search(r"backup_configuration\s*\{\s*enabled\s*=\s*true", text)


def test_the_gke_example_reserves_the_static_ip_the_chart_names():
    """The chart's ci values, the variable's default, and the helm_values output
    name one global address."""
    import yaml
    example = TERRAFORM / "examples" / "gke"
    default = next(v["static_ip_name"]["default"] for v in load(example / "variables.tf")["variable"] if "static_ip_name" in v)
    default = default[0] if isinstance(default, list) else default  # python-hcl2 wraps some values
    chart = TERRAFORM.parent / "helm" / "hookrelay" / "ci"
    for values in ("gke-ingress-values.yaml", "gke-gateway-values.yaml", "production-values.yaml"):
        gke = yaml.safe_load((chart / values).read_text())["gke"]
        (switch,) = [v for v in gke.values() if isinstance(v, dict) and v.get("enabled")]
        assert switch["staticIpName"] == default, values
    outputs = (example / "outputs.tf").read_text()
    assert "staticIpName = google_compute_global_address.relay.name" in outputs
    main = (example / "main.tf").read_text()
    assert re.search(r'resource "google_compute_global_address" "relay" \{[^}]*name\s*=\s*var\.static_ip_name', main)


def test_cloud_run_ends_streams_before_its_request_timeout_and_knows_its_url():
    main = (TERRAFORM / "modules" / "cloud-run" / "main.tf").read_text()
    timeout = int(re.search(r'timeout\s*=\s*"(\d+)s"', main).group(1))
    age = re.search(r'name\s*=\s*"HOOKRELAY_MAX_STREAM_AGE"\s*\n\s*value\s*=\s*"(\d+)m"', main)
    assert age and int(age.group(1)) * 60 < timeout <= 3600, "the relay ends streams before Cloud Run does"
    assert 'coalesce(var.public_url, "https://${var.name}-${data.google_project.this.number}.${var.region}.run.app")' in main
    assert re.search(r'name\s*=\s*"HOOKRELAY_PUBLIC_URL"\s*\n\s*value\s*=\s*local\.public_url', main)


def test_state_and_tfvars_stay_out_of_git():
    """The state holds secrets in plain text; tfvars may too."""
    import subprocess
    for path in ("examples/gke/terraform.tfstate", "examples/gke/terraform.tfstate.backup",
                 "examples/cloud-run/terraform.tfvars", "examples/gke/.terraform/providers"):
        result = subprocess.run(["git", "check-ignore", "-q", str(TERRAFORM / path)], cwd=TERRAFORM)
        assert result.returncode == 0, f"{path} is not ignored"
    for example in ("gke", "cloud-run"):
        readme = (TERRAFORM / "examples" / example / "README.md").read_text()
        assert 'backend "gcs"' in readme, f"{example}: no remote state"
