"""`studio train --photos DIR`: files the upload decoder refuses (a text file named .jpg, a PNG
whose header claims 100000x100000 pixels) are skipped with their reason, never a traceback."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def test_bad_files_are_skipped_with_their_reason(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "text.jpg").write_text("hi\n")
    (photos / "bomb.png").write_bytes(bomb_png())
    out = str(tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "train", "--photos", str(photos), "--out", out],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "MODEL_PRESET": "tiny", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "text.jpg is not a JPEG, PNG or WebP photo; skipped." in done.stderr
    assert "bomb.png is 100000x100000 pixels; the limit is 40 megapixels; skipped." in done.stderr
