"""`studio train --photos DIR`: files the upload decoder refuses (a text file named .jpg, a PNG
whose header claims 100000x100000 pixels) are skipped with their reason, never a traceback."""

import struct
import zlib
from pathlib import Path

from tests.conftest import studio


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
    done = studio("train", "--photos", str(photos), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "text.jpg is not a JPEG, PNG, WebP or HEIC photo; skipped." in done.stderr
    assert "bomb.png is 100000x100000 pixels; the limit is 40 megapixels; skipped." in done.stderr


def test_iphone_heic_photos_are_read_and_other_files_named(tmp_path: Path) -> None:
    """`.HEIC` files were skipped without a word; now they are decoded like uploads and counted."""
    from tests.pictures import astronaut_variants, heic

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(astronaut_variants(3)):
        (photos / f"IMG_000{i}.HEIC").write_bytes(heic(image))
    (photos / "notes.txt").write_text("my best photos\n")
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    done = studio("train", "--photos", str(photos), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "notes.txt is not a JPEG, PNG, WebP or HEIC photo; skipped." in done.stderr
    assert ".DS_Store" not in done.stderr
    # All three faces were found: the set is refused only for its size (the one minimum, 8).
    assert "Only 3 photos have a clear face of you; upload 5 more (at least 8 are needed)." in done.stderr
