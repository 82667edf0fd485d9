"""The Dockerfiles: pinned bases, non-root users, health checks, constrained installs.

No image is built here (no Docker daemon or registry in CI); these checks read the files.
"""

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest

from .conftest import REPO

# Dockerfile -> (final-stage command, kind of base image)
IMAGES = {
    "gateway": (["studio", "gateway", "--host", "0.0.0.0", "--port", "8000"], "python"),
    "notifier": (["studio", "worker", "notify", "--concurrency", "4"], "python"),
    "trainer": (["studio", "worker", "train", "--concurrency", "1"], "cuda"),
    "generator": (["studio", "worker", "generate", "--concurrency", "1"], "cuda"),
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(name: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with FROM's ${ARG}s resolved."""
    text = (REPO / "services" / name / "Dockerfile").read_text()
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
    return args, stages


def check_runtime_stage(stage: Stage, command: list[str]) -> None:
    (user,) = stage.all("USER")
    assert user.split(":")[0] not in ("0", "root"), "runs as root"
    (healthcheck,) = stage.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert json.loads(stage.all("CMD")[-1]) == command


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned(name):
    _, stages = parse(name)
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue  # FROM an earlier stage
        repo, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), stage.base
    final = stages[-1].base
    if IMAGES[name][1] == "python":
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", final), final
    else:
        assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+", final), final


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_unprivileged_with_a_healthcheck(name):
    _, stages = parse(name)
    check_runtime_stage(stages[-1], IMAGES[name][0])


def test_trainer_has_a_cpu_target_for_the_photos_queue():
    _, stages = parse("trainer")
    (photos,) = [s for s in stages if s.name == "photos"]
    assert photos.base.startswith("python:3.11")
    check_runtime_stage(photos, ["studio", "worker", "photos", "--concurrency", "2"])


@pytest.mark.parametrize("name", IMAGES)
def test_installs_are_constrained_and_use_real_extras(name):
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    _, stages = parse(name)
    installs = [run for s in stages for run in s.all("RUN") if "pip install" in run]
    assert installs
    for run in installs:
        for command in re.split(r"&&", run):
            if "pip install" in command:
                assert "-c constraints.txt" in command, command
        for group in re.findall(r"\"\.\[([\w,]+)\]\"", run):
            assert set(group.split(",")) <= extras, group
    if IMAGES[name][1] == "cuda":
        assert any("torch.__version__" in run and "2.14.1" in run for run in installs)
        env = " ".join(stages[-1].all("ENV"))
        assert "MODEL_DIR=/models" in env


def test_gpu_images_share_their_pins():
    pins = [parse(name)[0] for name in ("trainer", "generator")]
    keys = ("CUDA_IMAGE", "UV_IMAGE", "PYTHON_VERSION")
    assert {k: pins[0][k] for k in keys} == {k: pins[1][k] for k in keys}
    cpu = {parse(name)[0]["PYTHON_IMAGE"] for name in ("gateway", "notifier", "trainer")}
    assert len(cpu) == 1
    assert pins[0]["PYTHON_VERSION"] in cpu.pop(), "CPU and GPU images run the same Python"


def test_build_inputs_exist_and_enter_the_context():
    """Every COPY source is in the repo and not excluded by .dockerignore."""
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for name in IMAGES:
        _, stages = parse(name)
        for stage in stages:
            for copy in stage.all("COPY"):
                if copy.startswith("--from"):
                    continue
                *sources, _ = copy.split()
                for source in sources:
                    assert (REPO / source).exists(), f"{name}: COPY {source}: missing in the repo"
                    assert f"!{source}" in ignore or f"!{source}/**" in ignore, source


def test_gpu_image_packages_are_pinned_in_constraints():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version  # PEP 503 names
    assert pins.get("torch") == "2.14.1"
    for package in ("ultralytics", "open-clip-torch"):  # installed with --no-deps in GPU images
        assert package in pins, f"{package} is not pinned in constraints.txt"
