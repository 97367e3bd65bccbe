"""The sidecar ports are defined once, in envoy/render's `sidecar` preset; every
other place that names them (the Helm chart, the Cloud Run module, the
Dockerfile, scripts/stack) must agree with it. Run by scripts/test."""

import importlib.machinery
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def sidecar():
    loader = importlib.machinery.SourceFileLoader("envoy_render", str(ROOT / "envoy/render"))
    spec = importlib.util.spec_from_loader("envoy_render", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    preset = module.PRESETS["sidecar"]
    port = lambda address: address.rpartition(":")[2]
    return port(preset["listen"]), port(preset["http"][0]), port(preset["grpc"][0])


def test_every_deploy_artifact_uses_the_sidecar_ports():
    public, http, grpc = sidecar()
    deployment = (ROOT / "helm/hookrelay/templates/deployment.yaml").read_text()
    assert f"127.0.0.1:{http}" in deployment and f"127.0.0.1:{grpc}" in deployment
    assert re.search(rf"containerPort: {public}\b", deployment)
    cloud_run = (ROOT / "terraform/modules/cloud-run/main.tf").read_text()
    assert f'"0.0.0.0:{http}"' in cloud_run and f'"127.0.0.1:{grpc}"' in cloud_run
    assert set(re.findall(r"\bport\s*=\s*(\d+)", cloud_run)) <= {http, public}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"HOOKRELAY_HTTP_ADDR=0.0.0.0:{http}" in dockerfile
    assert f"HOOKRELAY_GRPC_ADDR=0.0.0.0:{grpc}" in dockerfile
    stack = (ROOT / "scripts/stack").read_text()
    assert f"http=127.0.0.1:{http} grpc=127.0.0.1:{grpc}" in stack
