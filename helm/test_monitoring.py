"""The alerts and the dashboard, checked with the real tool: promtool (Debian's
prometheus package, installed by scripts/test) checks the rules and runs their
unit tests (monitoring_test.yaml). That every metric they name exists is checked
against live servers by tests/it/observability.rs."""
import json
import pathlib
import subprocess

HELM = pathlib.Path(__file__).resolve().parent
MONITORING = HELM / "hookrelay" / "files" / "monitoring"


def promtool(*args):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=HELM)
    return result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules():
    passed, output = promtool("check", "rules", str(MONITORING / "alerts.yaml"))
    assert passed, output


def test_each_alert_fires_when_it_should_and_not_before():
    passed, output = promtool("test", "rules", "monitoring_test.yaml")
    assert passed, output


def test_every_alert_says_how_severe_and_what_to_do():
    import yaml
    for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert rule["for"], rule["alert"]


def test_the_dashboard_is_grafana_json_with_a_datasource_variable():
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert dashboard["uid"] == "hookrelay"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
