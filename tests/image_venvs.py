"""One virtualenv per container image, holding exactly what its Dockerfile installs.

`make test` installs every extra into one environment, so a module that only another image has would
go unnoticed. Here `services/Dockerfile` is read: every image (a stage with a `CMD`, following its
`FROM` chain) copies `/opt/venv` from a build stage, whose `pip install ... ".[extras]"` (and
`--no-deps` packages), with those of the stages it is built on, say what the image holds. The same
installs, with the same constraints, go into a plain virtualenv (no system site-packages) cached
under `var/image-venvs/`, keyed by the extras and a hash of the pins and the image's requirements.
The project itself is installed from a wheel built for the run (as `pip install .` does in the
image), so the cached environment always runs this checkout's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "var" / "image-venvs"
_EXTRAS = re.compile(r"""["']\.\[([\w,-]+)\]["']""")
_NO_DEPS = re.compile(r"--no-deps\s+((?:[\w.-]+\s*)+)")


@dataclass(frozen=True)
class Image:
    """A final stage of a Dockerfile: its name, what its venv holds, and how it starts."""

    name: str  # e.g. "gateway", "trainer:photos"
    dockerfile: Path
    extras: tuple[str, ...]  # pip extras of the project, e.g. ("server", "faces")
    no_deps: tuple[str, ...]  # packages installed with --no-deps
    cmd: tuple[str, ...]  # the image's CMD
    env: dict[str, str]  # the final stage's ENV

    @property
    def venv_key(self) -> str:
        return "+".join(self.extras) + ("+nodeps" if self.no_deps else "")


DOCKERFILE = REPO / "services" / "Dockerfile"


def _stages(text: str) -> dict[str, tuple[str, list[str]]]:
    """{stage name: (the stage it is built FROM, its instructions with continuations joined)}."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            words = line.split()
            name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else str(len(stages))
            current = []
            stages[name] = (words[1], current)
        elif current is not None:
            current.append(line)
    return stages


def _chain(stages: dict[str, tuple[str, list[str]]], name: str) -> list[list[str]]:
    """The instructions of `name` and of the stages it is built on, base first."""
    chain = []
    while name in stages:
        parent, instructions = stages[name]
        chain.append(instructions)
        name = parent
    return chain[::-1]


def _env(chain: list[list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (i for instructions in chain for i in instructions):
        if line.upper().startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def read_images(dockerfile: Path = DOCKERFILE) -> list[Image]:
    """Every image (stage with a `CMD`) of `dockerfile`; ValueError if one's install cannot be read."""
    stages = _stages(dockerfile.read_text())
    images = []
    for name, (_, instructions) in stages.items():
        if not any(i.upper().startswith("CMD ") for i in instructions):
            continue
        chain = _chain(stages, name)
        lines = [i for instructions in chain for i in instructions]
        copied = [re.search(r"--from=(\S+)\s+/opt/venv", i) for i in lines]
        build = next((m.group(1) for m in reversed(copied) if m), None)
        installs = " ".join(
            i for stage in _chain(stages, build or "") for i in stage if "install" in i and "RUN" in i
        )
        extras = _EXTRAS.findall(installs)
        if not extras:
            raise ValueError(f"{dockerfile}: image {name!r} installs no '.[extras]' into /opt/venv")
        no_deps = _NO_DEPS.findall(installs)
        cmd = next(i for i in reversed(lines) if i.upper().startswith("CMD "))
        images.append(
            Image(
                name=name,
                dockerfile=dockerfile,
                extras=tuple(extras[-1].split(",")),  # the chain's last install is the whole set
                no_deps=tuple(sorted({p for group in no_deps for p in group.split()})),
                cmd=tuple(json.loads(cmd[4:])),
                env=_env(chain),
            )
        )
    return images


def _fingerprint(image: Image) -> str:
    """Changes when what pip would install for the image changes: the pins, the project's
    dependencies or the image's extras (not when another extra or the code changes)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [project["dependencies"], *(project["optional-dependencies"][e] for e in image.extras)]
    digest = hashlib.sha256(json.dumps([wanted, image.no_deps]).encode())
    digest.update((REPO / "constraints.txt").read_bytes())
    return digest.hexdigest()[:12]


def build_wheel(out: Path) -> Path:
    """The project's wheel, built from a copy of what the Dockerfiles COPY (no build files left here)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, src / name)
    for name in ("shared", "services"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            ".",
        ],
        src,
    )
    return next(out.glob("portrait_studio-*.whl"))


def _run(args: list[str], cwd: Path | None = None) -> None:
    """Run a build step; its output only when it fails (pip warns a lot about local indexes)."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def ensure_venv(image: Image, wheel: Path) -> Path:
    """The image's virtualenv (built once per extras and pins), with this run's wheel in it."""
    venv = CACHE / f"{image.venv_key}-{_fingerprint(image)}"
    done = venv / ".complete"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    constraints = ["-c", str(REPO / "constraints.txt")]
    if not done.exists():
        for stale in CACHE.glob(f"{image.venv_key}-*"):  # other pins: gigabytes for the ML set
            shutil.rmtree(stale, ignore_errors=True)
        base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        _run([base_python, "-m", "venv", str(venv)])
        _run([*pip, *constraints, f"{wheel}[{','.join(image.extras)}]"])
        if image.no_deps:
            _run([*pip, *constraints, "--no-deps", *image.no_deps])
        done.write_text(f"{image.extras} {image.no_deps}\n")
    _run([*pip, "--no-deps", "--force-reinstall", str(wheel)])
    return venv


def image_env(image: Image, venv: Path, home: Path, **overrides: str) -> dict[str, str]:
    """The environment a process of the image sees: the image's ENV with paths of this machine,
    the venv first on PATH, nothing of the test environment's Python (no PYTHONPATH), and then
    `overrides` (the stack's addresses)."""
    keep = ("LANG", "LC_ALL", "TZ", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    for key, value in image.env.items():
        if key == "PATH":
            continue
        if value.startswith(("/models", "/home/studio", "/tmp/")):  # image paths that are not here
            value = str(home / value.strip("/").replace("/", "-"))
        env[key] = value
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin")
    env.update(overrides)
    return env


def make_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="studio-image-"))
