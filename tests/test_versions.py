"""One version, said the same everywhere: the workspace's, the changelog's, the charts'."""

import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def workspace_version():
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def released():
    """The releases in CHANGELOG.md, newest first."""
    return re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_every_crate_takes_the_workspace_version():
    for manifest in [ROOT / "Cargo.toml", *ROOT.glob("crates/*/Cargo.toml"), ROOT / "bench/Cargo.toml"]:
        package = tomllib.loads(manifest.read_text())["package"]
        assert package["version"] == {"workspace": True}, manifest


def test_the_version_is_the_latest_release_or_the_next_one_in_the_making():
    version, latest = workspace_version(), released()[0]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    if version != latest:
        base = version.split("-")[0]
        assert "-" in version and tuple(map(int, base.split("."))) > tuple(map(int, latest.split("."))), version


def test_the_charts_deploy_the_latest_release():
    latest = released()[0]
    for chart in ["helm/hookrelay", "helm/hookrelay-agent"]:
        assert yaml.safe_load((ROOT / chart / "Chart.yaml").read_text())["appVersion"] == latest, chart


def test_the_previous_release_is_a_release():
    text = (ROOT / "tests/upgrade/PREVIOUS").read_text()
    version = re.search(r"^version=(\S+)$", text, re.M).group(1)
    assert re.search(r"^commit=[0-9a-f]{40}$", text, re.M)
    assert version in released(), version
    serves_from = re.search(r'pub const SERVES_FROM: &str = "([^"]+)"', (ROOT / "src/store/release.rs").read_text())
    assert serves_from.group(1) == version, "a release's database serves the release before it"
