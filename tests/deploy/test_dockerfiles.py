"""services/Dockerfile: pinned bases, non-root users, health checks, constrained installs, and
each image's virtualenv holding exactly its extras.

These checks read the file; tests/deploy/test_images.py builds and runs the gateway image.
"""

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest

from .conftest import REPO

DOCKERFILE = REPO / "services" / "Dockerfile"
# target -> (command, kind of base image, extras in its virtualenv)
IMAGES = {
    "gateway": (["studio", "gateway", "--host", "0.0.0.0", "--port", "8000"], "python", {"server"}),
    "notifier": (["studio", "worker", "notify", "--concurrency", "4"], "python", {"server"}),
    "photos": (["studio", "worker", "photos", "--concurrency", "2"], "python", {"server", "faces"}),
    "trainer": (["studio", "worker", "train", "--concurrency", "1"], "cuda", {"server", "faces", "ml"}),
    "generator": (["studio", "worker", "generate", "--concurrency", "1"], "cuda", {"server", "faces", "ml"}),
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages by name, with FROM's ${ARG}s resolved."""
    text = DOCKERFILE.read_text()
    text = re.sub(r"\\\n", " ", re.sub(r"^\s*#.*\n", "", text, flags=re.MULTILINE))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(str.strip, text.splitlines()):
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            image, *alias = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).split()
            stages.append(Stage(image, alias[-1] if alias else None))
        elif keyword == "ARG" and not stages and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    assert all(s.name for s in stages), "every stage is named"
    return args, {s.name: s for s in stages if s.name}


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages a target is built on, its external base's stage first."""
    out = [stages[target]]
    while out[0].base in stages:
        out.insert(0, stages[out[0].base])
    return out


def last(stages: list[Stage], keyword: str) -> str:
    values = [arg for stage in stages for arg in stage.all(keyword)]
    assert values, f"no {keyword}"
    return values[-1]


def installed_extras(stages: dict[str, Stage], target: str) -> set[str]:
    """Extras installed into the virtualenv that the target copies (or builds) at /opt/venv."""
    copies = [c.split() for s in chain(stages, target) for c in s.all("COPY") if c.startswith("--from=")]
    source = [c[0].removeprefix("--from=") for c in copies if c[-1] == "/opt/venv"][-1]
    runs = [run for s in chain(stages, source) for run in s.all("RUN")]
    return {e for run in runs for group in re.findall(r"\"\.\[([\w,]+)\]\"", run) for e in group.split(",")}


@pytest.mark.parametrize("target", IMAGES)
def test_base_images_are_pinned(target):
    _, stages = parse()
    for stage in stages.values():
        if stage.base in stages:
            continue  # FROM an earlier stage
        repo, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), stage.base
    final = chain(stages, target)[0].base
    if IMAGES[target][1] == "python":
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", final), final
    else:
        assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+", final), final


@pytest.mark.parametrize("target", IMAGES)
def test_each_image_runs_unprivileged_with_a_healthcheck_and_its_command(target):
    _, stages = parse()
    runtime = chain(stages, target)
    assert last(runtime, "USER").split(":")[0] not in ("0", "root"), "runs as root"
    assert "/healthz" in last(runtime, "HEALTHCHECK")
    assert json.loads(last(runtime, "CMD")) == IMAGES[target][0]


@pytest.mark.parametrize("target", IMAGES)
def test_each_image_has_exactly_its_extras(target):
    _, stages = parse()
    assert installed_extras(stages, target) == IMAGES[target][2]


def test_installs_are_constrained_and_use_real_extras():
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    args, stages = parse()
    installs = [run for s in stages.values() for run in s.all("RUN") if "pip install" in run]
    assert installs
    for run in installs:
        for command in re.split(r"&&|;", run):
            if "pip install" in command:
                assert "-c constraints.txt" in command, command
        for group in re.findall(r"\"\.\[([\w,]+)\]\"", run):
            assert set(group.split(",")) <= extras, group
    gpu = [run for s in chain(stages, "venv-gpu") for run in s.all("RUN")]
    assert any("torch.__version__" in run and "2.14.1" in run for run in gpu)
    for target in ("trainer", "generator"):
        assert "MODEL_DIR=/models" in " ".join(e for s in chain(stages, target) for e in s.all("ENV"))
    assert args["PYTHON_VERSION"] in args["PYTHON_IMAGE"], "CPU and GPU images run the same Python"


def test_the_build_ca_bundle_stays_out_of_the_images():
    """PIP_CERT (a mounted CA bundle, deploy/images.sh) is a build-stage argument only."""
    _, stages = parse()
    for target in IMAGES:
        for stage in chain(stages, target):
            assert not any("PIP_CERT" in arg or ".crt" in arg for _, arg in stage.instructions), stage.name


def test_build_inputs_exist_and_enter_the_context():
    """Every COPY source is in the repo and not excluded by .dockerignore."""
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    _, stages = parse()
    for stage in stages.values():
        for copy in stage.all("COPY"):
            if copy.startswith("--from"):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert (REPO / source).exists(), f"{stage.name}: COPY {source}: missing in the repo"
                assert f"!{source}" in ignore or f"!{source}/**" in ignore, source


def test_gpu_image_packages_are_pinned_in_constraints():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version  # PEP 503 names
    assert pins.get("torch") == "2.14.1"
    for package in ("ultralytics", "open-clip-torch", "uv"):  # --no-deps in GPU images; uv builds them
        assert package in pins, f"{package} is not pinned in constraints.txt"
