python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys; print(sys.version)"
python3 -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|transformers|accelerate|peft|safetensors|opencv|numpy|pillow|scipy|pydantic|pyyaml|typer|rich|tqdm|ultralytics|dlib|boto3|sqlalchemy|celery|redis|psycopg|jinja2|huggingface)" 
python3 -c "import diffusers, peft, spandrel; print('diffusers', diffusers.__version__, 'peft', peft.__version__)"
python3 -c "import cv2; print('cv2', cv2.__version__)" 2>&1 | tail -1
python3 -c "import pydantic_settings; print('pyd-settings ok')" 2>&1 | tail -1
python3 -c "import shared.ml.tiny" 2>&1 | tail -1
