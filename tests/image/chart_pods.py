"""The containers both charts deploy, as the container smoke test (tests/image/main.rs)
runs them with podman: rendered by the Helm v4 SDK exactly as helm/test_chart.py and
helm/test_agent_chart.py render them, then reduced to what a container runtime needs.

    python3 tests/image/chart_pods.py RELAY_VALUES_JSON AGENT_VALUES_JSON

prints one JSON object: {"relay", "envoy", "migrate", "agent"}, each with
command, args, env ({name: value} or {name: {"secret": [secretName, key]}}), mounts
([{path, readOnly, kind: secret|configMap|emptyDir, name, items?, data?, sizeLimit?}]),
security (the pod's and the container's securityContext merged, the container's
winning) and grace (terminationGracePeriodSeconds)."""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "helm"))

import test_agent_chart  # noqa: E402
import test_chart  # noqa: E402


def pods(documents):
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"}
    for document in documents:
        if document["kind"] not in ("Deployment", "Job"):
            continue
        spec = document["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            yield container["name"], container_plan(spec, container, volumes, config_maps)


def container_plan(spec, container, volumes, config_maps):
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = {"secret": [reference["name"], reference["key"]]}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        entry = {"path": mount["mountPath"], "readOnly": mount.get("readOnly", False)}
        if "secret" in volume:
            entry.update(kind="secret", name=volume["secret"]["secretName"], items=volume["secret"].get("items"))
        elif "configMap" in volume:
            name = volume["configMap"]["name"]
            entry.update(kind="configMap", name=name, data=config_maps[name])
        elif "emptyDir" in volume:
            entry.update(kind="emptyDir", sizeLimit=volume["emptyDir"].get("sizeLimit"))
        else:
            raise SystemExit(f"chart_pods.py: no rule for volume {volume}")
        mounts.append(entry)
    security = dict(spec.get("securityContext", {}))
    security.update(container.get("securityContext", {}))
    return {
        "command": container.get("command"),
        "args": container.get("args", []),
        "env": env,
        "mounts": mounts,
        "security": security,
        "grace": spec.get("terminationGracePeriodSeconds", 30),
    }


def main():
    relay_values, agent_values = (json.loads(argument) for argument in sys.argv[1:3])
    plans = {}
    for name, plan in pods(test_chart.render_values(relay_values)):
        plans[name] = plan
    for name, plan in pods(test_agent_chart.render(agent_values)):
        plans[name] = plan
    missing = {"relay", "envoy", "migrate", "agent"} - plans.keys()
    if missing:
        raise SystemExit(f"chart_pods.py: the charts render no container named {sorted(missing)}")
    print(json.dumps(plans))


if __name__ == "__main__":
    main()
