"""Render every kustomization of deploy/k8s once per session with the real `kubectl kustomize`."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# Every kustomization an operator may apply (base alone runs without KEDA).
BUILDS = ("base", "autoscaling", "overlays/dev", "overlays/prod")
INSTALL_HINT = (
    "kubectl is required by tests/deploy (it runs `kubectl kustomize`). Install it with "
    "`apt-get install -y kubernetes-client` (Debian/Ubuntu), or any kubectl >= 1.20 on PATH, "
    "or point the KUBECTL environment variable at one."
)


def kubectl() -> str:
    """The kubectl binary; a missing one fails the tests (a skip would hide untested manifests)."""
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path or not Path(path).exists():
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def build(name: str) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {name} failed:\n{result.stderr}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {name: build(name) for name in BUILDS}
