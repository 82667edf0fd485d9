#!/usr/bin/env bash
# The wheels a GPU bench call needs beside the GPU image's own packages (run HERE, not there):
# downloads them into the git-ignored .whl/ (about 50 MiB with dlib's two models), which a device call
# carries.
#
#   bash bench/bench_wheels.sh
#   # then, through the device tool's `run` (carry: [".whl"]), for example (session 20 ran these on
#   # an H100 in three calls; one call of all of them runs past the 600 s a call may take):
#   bash bench/device_run.sh \
#     "timeout 90 python3 -m pytest --noconftest -q -p no:cacheprovider tests/ml/test_cuda_graphs.py tests/generator/test_graphed.py tests/trainer/test_render_graphs.py" \
#     "timeout 80 python3 bench/train_bench.py --selection-only --selection 4" \
#     "timeout 30 python3 bench/train_bench.py --preprocess-only 1536" \
#     "timeout 60 python3 bench/train_bench.py --contiguous --baseline-steps 3 --steps 200" \
#     "timeout 280 python3 bench/train_bench.py --compile --baseline-steps 3 --steps 200" \
#     "timeout 100 python3 bench/generate_bench.py --phases batched,graphed --count 8 --lean --out \$OUT/gen.json"
#
# The whole product on a GPU (bench/gpu_e2e.py) needs far more: bench/gpu_stack_wheels.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q -d .whl --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  diffusers==0.42.1 pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
  typing-inspection==0.4.5 python-dotenv==1.2.4 spandrel==0.4.2 open_clip_torch==3.3.0 pytest==9.2.0 \
  pluggy==1.7.0 iniconfig==2.3.1 Pygments==2.21.0 python-json-logger==4.2.0 tenacity==9.2.1 \
  typing_extensions==4.16.0 einops==0.8.2 ftfy==6.3.1 wcwidth==0.9.4 SQLAlchemy==2.1.9 greenlet==3.5.6 \
  dlib-bin==20.0.1.post1

bash bench/face_models_wheel.sh .whl  # dlib's models, for the face checks of checkpoint choice
ls .whl | wc -l
