"""Download the weights of the model manifest over HTTPS, with progress and verification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import requests
from tqdm import tqdm

from shared.ml.registry import (
    ChecksumMismatch,
    FileSpec,
    ModelSpec,
    get_spec,
    model_dir,
    record_pin,
    verify_file,
)

CHUNK = 1 << 20


def pull_models(
    names: list[str],
    dest: Path | None = None,
    *,
    manifest_path: Path | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Fetch every file of each named model into `dest/<name>/` (default: settings.model_dir).

    Files already present and matching their hash are skipped; a download that does not match
    the manifest's sha256 is deleted and raises ChecksumMismatch. Returns name -> local folder.
    """
    root = Path(dest) if dest else model_dir()
    specs = [get_spec(n, manifest_path=manifest_path) for n in names]  # fail before downloading
    done = {}
    with requests.Session() as session:
        if token := os.environ.get("HF_TOKEN"):
            session.headers["Authorization"] = f"Bearer {token}"
        for spec in specs:
            for file in spec.files:
                _pull_file(session, spec, file, root, progress=progress, timeout=timeout)
            done[spec.name] = root / spec.name
    return done


def _pull_file(
    session: requests.Session,
    spec: ModelSpec,
    file: FileSpec,
    root: Path,
    *,
    progress: bool,
    timeout: float,
) -> None:
    path = root / spec.name / file.path
    pin_key = f"{spec.name}/{file.path}"
    if path.exists():
        try:
            verify_file(root, pin_key, path, file.sha256)
            return
        except ChecksumMismatch:
            path.unlink()  # a corrupt or stale file: fetch it again
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + f".part{os.getpid()}")
    digest = hashlib.sha256()
    url = spec.url(file)
    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=pin_key, disable=not progress)
            with part.open("wb") as out, bar:
                for block in response.iter_content(CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        got = digest.hexdigest()
        if file.sha256 and got != file.sha256:
            raise ChecksumMismatch(path, file.sha256, got)
        part.replace(path)
        record_pin(root, pin_key, path, got)  # pinned on first pull when the manifest has no hash
    finally:
        part.unlink(missing_ok=True)
