"""What the README and the Makefile say `make install` puts on a machine is true (issue 23 item 10):
the pinned torch is PyPI's CUDA build even without a GPU, and the size they give is the size the
installed torch and nvidia-* wheels really take, measured here from the installed files."""

import re
from importlib import metadata

import torch

from tests.conftest import REPO


def _installed_bytes(prefixes: tuple[str, ...]) -> int:
    total = 0
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(prefixes):
            total += sum(f.size or 0 for f in dist.files or [] if f.size)
    return total


def test_the_readme_and_makefile_say_what_torch_install_costs() -> None:
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)$", (REPO / "constraints.txt").read_text(), re.M))
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert "never pulls a multi-GB CUDA build" not in makefile  # it did pull one
    if torch.version.cuda is None:  # a CPU build (aarch64): nothing to warn about
        return
    assert "CUDA build" in readme and "CUDA build" in makefile
    claimed = re.search(r"CUDA build \(about ([\d.]+) GB", readme)
    assert claimed, "README: say how large the CUDA build of torch is"
    measured = _installed_bytes(("torch", "nvidia-", "triton")) / 1e9
    assert abs(float(claimed[1]) - measured) / measured < 0.25, (claimed[1], round(measured, 2))
    assert f"torch {pins['torch']} + torchvision {pins['torchvision']}" in readme
