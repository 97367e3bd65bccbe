"""The real checkers both charts' tests run on rendered manifests."""
import subprocess

# The Kubernetes minor version GKE's regular channel runs (November 2026).
KUBERNETES_VERSION = "1.35.0"


def kubernetes_validate(path):
    """kubernetes-validate --strict: (passed, output)."""
    result = subprocess.run(["kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, str(path)], capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr


def checkov(path):
    """checkov's Kubernetes checks: (passed, output)."""
    result = subprocess.run(
        ["checkov", "-f", str(path), "--framework", "kubernetes", "--skip-download", "--compact", "--quiet"],
        capture_output=True, text=True,
    )
    return result.returncode == 0, result.stdout + result.stderr
