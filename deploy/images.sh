#!/usr/bin/env bash
# Build the container images of services/Dockerfile with buildah (no Docker daemon, no Docker Hub)
# and smoke-test each one inside itself.
#
#   deploy/images.sh                  # base + build + smoke for every image
#   deploy/images.sh build gateway    # base + build one image (smoke: `deploy/images.sh smoke gateway`)
#   deploy/images.sh base             # only the Debian base image
#   deploy/images.sh rmi [IMAGE...]   # remove the images of $TAG (and its base)
# TAG (default dev) names the images; tests build under a tag of their own and remove it afterwards.
#
# The base: Debian bookworm made by mmdebstrap (python3, python3-venv, ca-certificates), cached as a
# tarball under var/images/ and imported as $BASE_IMAGE; it stands in for both PYTHON_IMAGE and
# CUDA_IMAGE (the GPU images then use Debian's Python 3.11 through uv's only-system preference, and
# find CUDA only on a GPU node's driver). Images are tagged localhost/studio-NAME:dev.
# Storage: buildah's vfs driver (works in any container, copies every layer: GPU images need ~20 GB).
# The host's CA bundle is mounted into RUN steps (TLS-inspecting proxies) and never copied into an image.
# Needs: buildah, mmdebstrap (Debian: apt-get install buildah mmdebstrap), root or user namespaces.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VAR=${IMAGES_VAR:-$REPO/var/images}
SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,passwd,ca-certificates
TAG=${TAG:-dev}
# The base carries the tag too, so a build under a tag of its own (the image test's) imports its own base
# and never leans on one left in buildah's storage (which lives outside the clone) by an earlier run.
BASE_IMAGE=localhost/studio-base:$SUITE-$TAG
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
BUILDAH=(buildah --storage-driver vfs)
ALL=(gateway notifier photos trainer generator)

log() { printf '[images] %s\n' "$*" >&2; }

# Working containers are removed on exit, also when stopped by SIGTERM (vfs copies each one whole).
CONTAINERS=()
cleanup() { for c in "${CONTAINERS[@]}"; do "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
trap 'exit 143' TERM INT

# The rootfs tarball is rebuilt when the package list changes (its name carries it).
base() {
    local tar="$VAR/debian-$SUITE-${PACKAGES//,/-}.tar"
    mkdir -p "$VAR"
    if [[ ! -s $tar ]]; then
        log "mmdebstrap $SUITE ($PACKAGES)"
        mmdebstrap --quiet --format=tar --variant=minbase --include="$PACKAGES" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            "$SUITE" "$tar.part"
        mv "$tar.part" "$tar"
    fi
    local id
    id=$(sha256sum "$tar" | cut -c1-16)
    if [[ $("${BUILDAH[@]}" inspect --type image --format '{{index .ImageAnnotations "studio.rootfs"}}' \
        "$BASE_IMAGE" 2>/dev/null) == "$id" ]]; then
        return
    fi
    log "importing $tar as $BASE_IMAGE"
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    CONTAINERS+=("$ctr")
    "${BUILDAH[@]}" add --quiet "$ctr" "$tar" / >/dev/null
    "${BUILDAH[@]}" config --env LANG=C.UTF-8 --cmd python3 --annotation "studio.rootfs=$id" "$ctr"
    "${BUILDAH[@]}" commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
}

# Empty when the image does not exist: `buildah images NAME` then exits 125 ("image not known"), which
# under `set -o pipefail` would end the script before the first build on a fresh machine.
image_id() { "${BUILDAH[@]}" images --quiet --no-trunc "localhost/studio-$1:$TAG" 2>/dev/null | head -1 || true; }

build() {
    local name=$1 start previous
    start=$(date +%s)
    previous=$(image_id "$name")
    log "building $name"
    "${BUILDAH[@]}" bud --isolation chroot --quiet --format docker \
        -f "$REPO/services/Dockerfile" --target "$name" -t "localhost/studio-$name:$TAG" \
        --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg CUDA_IMAGE="$BASE_IMAGE" \
        --build-arg PYTHON_VERSION=3.11 --build-arg UV_PYTHON_PREFERENCE=only-system \
        -v "$CA_BUNDLE:/etc/ssl/host-ca.crt:ro" --build-arg PIP_CERT=/etc/ssl/host-ca.crt \
        "$REPO" >/dev/null
    # The image this tag named before is removed (vfs keeps every image as a full copy).
    if [[ -n $previous && $previous != $(image_id "$name") ]]; then
        "${BUILDAH[@]}" rmi "$previous" >/dev/null 2>&1 || true
    fi
    local size
    size=$("${BUILDAH[@]}" images --format '{{.Size}}' "localhost/studio-$name:$TAG" | head -1)
    log "built localhost/studio-$name:$TAG in $(($(date +%s) - start)) s, $size"
}

# Run a command inside an image: `deploy/images.sh run IMAGE [-e K=V|-v SRC:DST ...] -- CMD...`.
# Host network and the image's user, working directory and environment.
run() {
    local name=$1 ctr
    shift
    local opts=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        opts+=("$1")
        shift
    done
    [[ ${1:-} == -- ]] && shift
    ctr=$("${BUILDAH[@]}" from --quiet "localhost/studio-$name:$TAG")
    CONTAINERS+=("$ctr")
    "${BUILDAH[@]}" run --isolation chroot --network host "${opts[@]}" "$ctr" -- "$@"
}

# Each image's smoke check, without servers: its process's modules import (a worker's are the task
# modules of its queue, shared.jobs.celery_app.QUEUE_MODULES) and the `studio` command runs. The gateway
# image is also started against real servers by tests/deploy/test_images.py.
smoke() {
    local name=$1 check torch="import torch; assert torch.__version__.startswith('2.14.1'), torch.__version__"
    case $name in
        gateway) check='import services.gateway.app, shared.scheduler' ;;
        notifier) check='queue("notify")' ;;
        photos) check='queue("photos"); import dlib, cv2' ;;
        trainer) check="queue('train'); $torch" ;;
        generator) check="queue('generate'); $torch" ;;
        *) log "unknown image $name"; return 2 ;;
    esac
    run "$name" -- python -c "import importlib
from shared.jobs.celery_app import QUEUE_MODULES
def queue(q): [importlib.import_module(m) for m in QUEUE_MODULES[q]]
$check"
    run "$name" -- studio --help >/dev/null
    log "smoke $name: ok"
}

main() {
    local cmd=${1:-all}
    [[ $# -gt 0 ]] && shift
    local names=("$@")
    [[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
    case $cmd in
        base) base ;;
        build) base; for n in "${names[@]}"; do build "$n"; done ;;
        smoke) for n in "${names[@]}"; do smoke "$n"; done ;;
        run) run "$@" ;;
        all) base; for n in "${names[@]}"; do build "$n"; smoke "$n"; done ;;
        rmi) for n in "${names[@]}"; do "${BUILDAH[@]}" rmi "localhost/studio-$n:$TAG" >/dev/null 2>&1 || true; done
             "${BUILDAH[@]}" rmi "$BASE_IMAGE" >/dev/null 2>&1 || true ;;
        *) log "usage: $0 [all|base|build|smoke|run|rmi] [IMAGE...]"; return 2 ;;
    esac
}

main "$@"
