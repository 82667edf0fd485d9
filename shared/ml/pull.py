"""Download the weights of the model manifest, verify them, and hold their pins.

Hub files (`hub` + `revision` in manifest.yaml) go through huggingface_hub's `hf_hub_download`:
the revision the manifest pins, HF_ENDPOINT for mirrors, HF_TOKEN (sent to the hub only; the
client drops it on a redirect to another host such as the hub's CDN), etags, and a transfer cut
mid-file resumes with an HTTP Range request. Files on other hosts (`url`: GitHub releases) go
through huggingface_hub's `http_get`, the same maintained httpx client (proxies, TLS, retries,
Range resume of a cut connection) with only the headers given here, so no token ever leaves for
GitHub; a `.part` file left by an interrupted run is resumed too.

Every file is downloaded into `<model_dir>/.download/` and checked there: against the manifest's
published sha256 (and size), else against the hash pinned at an earlier pull (pins.json). Only
verified bytes are moved into `<model_dir>/<name>/`. A pin, once recorded, refuses different
bytes until an operator accepts them (`studio models pull --accept-new NAME`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from shared.ml.registry import (
    ChecksumMismatch,
    DownloadFailed,
    FileSpec,
    ModelError,
    ModelSpec,
    PinMismatch,
    get_spec,
    hub_endpoint,
    model_dir,
    read_pin,
    record_pin,
    sha256_file,
    verify_file,
)

STAGING = ".download"  # under the model dir: same filesystem, so the final move is atomic
USER_AGENT = "portrait-studio (studio models pull)"
log = logging.getLogger(__name__)


def pull_models(
    names: list[str],
    dest: Path | None = None,
    *,
    manifest_path: Path | None = None,
    progress: bool = True,
    accept_new: Iterable[str] = (),
) -> dict[str, Path]:
    """Fetch every file of each named model into `dest/<name>/` (default: settings.model_dir).

    A present file that matches its hash (manifest sha256, else its pin) is not fetched again.
    A download that does not match is deleted and raises ChecksumMismatch (published hash) or
    PinMismatch (pinned hash); nothing unverified reaches `dest/<name>/`. `accept_new` names the
    models whose pinned files are fetched again and whose new bytes replace their pins (the
    operator's decision); published hashes still hold for them. Pickled weights marked `convert`
    are converted to safetensors, loaded weights-only. Returns name -> local folder.
    Raises UnknownModel before any download, DownloadFailed when a server does not deliver.
    """
    root = Path(dest) if dest else model_dir()
    specs = [get_spec(n, manifest_path=manifest_path) for n in names]  # fail before downloading
    accept = set(accept_new)
    done = {}
    with _progress_bars(progress):
        for spec in specs:
            for file in spec.files:
                _pull_file(spec, file, root, accept_new=spec.name in accept)
                if file.convert:
                    _convert(spec, file, root)
            done[spec.name] = root / spec.name
    return done


def _pull_file(spec: ModelSpec, file: FileSpec, root: Path, *, accept_new: bool) -> None:
    rel = f"{spec.name}/{file.path}"
    path = root / spec.name / file.path
    refetch = accept_new and not file.sha256  # a published hash is not the operator's to override
    if path.exists() and not refetch:
        try:
            verify_file(root, rel, path, file.sha256)
            return
        except ChecksumMismatch as e:
            log.warning("%s; fetching it again", e)
            path.unlink()
    pin = read_pin(root, rel)
    staged = _download(spec, file, root)
    try:
        got = sha256_file(staged)
        if file.sha256 and got != file.sha256:
            raise ChecksumMismatch(path, file.sha256, got)
        if file.size is not None and staged.stat().st_size != file.size:
            raise DownloadFailed(f"{rel}: {staged.stat().st_size} bytes, published size {file.size}")
        if pin and got != pin["sha256"] and not file.sha256:
            if not accept_new:
                raise PinMismatch(spec.name, rel, pin["sha256"], got)
            log.warning("%s: accepted new bytes (operator): pin %s -> %s", rel, pin["sha256"], got)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(path)
        record_pin(root, rel, path, got)
    finally:
        staged.unlink(missing_ok=True)


def _download(spec: ModelSpec, file: FileSpec, root: Path) -> Path:
    """Fetch `file` into the staging folder; returns the staged path (not yet verified)."""
    import httpx2

    stage = root / STAGING / spec.name
    try:
        if file.url:
            return _download_url(file.url, stage / f"{file.path}.part", file.size)
        from huggingface_hub import hf_hub_download

        # token=None: huggingface_hub reads HF_TOKEN (or its saved login) and sends it to the
        # endpoint only; a redirect to another host (the CDN) goes without it.
        return Path(
            hf_hub_download(
                spec.hub,
                file.path,
                repo_type=spec.repo_type,
                revision=spec.revision,
                local_dir=stage,
                endpoint=hub_endpoint(),
            )
        )
    except (httpx2.HTTPError, OSError) as e:
        raise DownloadFailed(f"download of {spec.name}/{file.path} from {spec.url(file)} failed: {e}") from e


def _download_url(url: str, part: Path, size: int | None) -> Path:
    """GET `url` into `part`, resuming from its current length (HTTP Range), no credentials."""
    from huggingface_hub.file_download import http_get

    part.parent.mkdir(parents=True, exist_ok=True)
    part.touch(exist_ok=True)
    with part.open("r+b") as out:
        out.seek(0, os.SEEK_END)
        # http_get sends only these headers (no Authorization), retries a cut connection with
        # `Range: bytes=<received>-`, and starts over if the server ignores the range.
        http_get(
            url,
            out,
            resume_size=out.tell(),
            headers={"User-Agent": USER_AGENT},
            expected_size=size,
            displayed_filename=part.name.removesuffix(".part"),
        )
    return part


def _convert(spec: ModelSpec, file: FileSpec, root: Path) -> None:
    """Convert a verified pickle to safetensors (weights-only load) unless an up-to-date,
    verified conversion is present; pins the converted file. Needs torch: runs where weights are
    pulled (the generator image's models-pull Job), never in the light images (.importlinter)."""
    if not all(importlib.util.find_spec(m) for m in ("torch", "safetensors")):
        raise ModelError(
            f"{spec.name}: converting {file.path} to safetensors needs torch and safetensors (the ml "
            "extra): run `studio models pull` where the generator runs (its image)"
        )
    from shared.ml.convert import converted_from, pickle_to_safetensors

    folder = root / spec.name
    src, dst = folder / file.path, folder / file.converted_path
    src_sha = verify_file(root, f"{spec.name}/{file.path}", src, file.sha256)
    rel = f"{spec.name}/{file.converted_path}"
    if dst.exists():
        with contextlib.suppress(ChecksumMismatch, OSError):
            verify_file(root, rel, dst, None)
            if converted_from(dst) == src_sha:
                return
    pickle_to_safetensors(src, dst, metadata={"source": file.path, "source_sha256": src_sha})
    record_pin(root, rel, dst, sha256_file(dst))
    log.info("converted %s to %s (weights-only load)", src, dst.name)


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()
