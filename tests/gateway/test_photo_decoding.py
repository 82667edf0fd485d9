"""shared.images on the inputs people really send: 16-bit, transparent, tiny and 108 MP photos.

These call the upload's decoder directly (the gateway runs exactly `clean_upload`); the HTTP path
around it is covered in test_abuse.py.
"""

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from shared import faces
from shared.images import NEUTRAL_BACKGROUND, ImageRejected, clean_upload, to_rgb8
from tests.pictures import astronaut, jpeg, png

MAX_BYTES = 15 * 2**20
MAX_PIXELS = 40_000_000
MIN_FACE_PX = 128
BLUR = 40.0


def clean(raw: bytes, name: str = "photo") -> Image.Image:
    cleaned = clean_upload(raw, filename=name, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    return Image.open(io.BytesIO(cleaned.data))


def grey_face() -> np.ndarray:
    return np.asarray(astronaut().convert("L"))


def check(image: Image.Image) -> faces.PhotoCheck:
    return faces.check_photo(image, min_face_px=MIN_FACE_PX, blur_min_variance=BLUR)


# -- 1. high bit depth ----------------------------------------------------------------------------


def test_16bit_grey_png_is_scaled_not_clipped_and_the_face_is_found() -> None:
    grey8 = grey_face()
    grey16 = Image.fromarray(grey8.astype(np.uint16) * 257)  # mode I;16, 0..65535
    assert grey16.mode == "I;16"
    stored = clean(png(grey16), "grey16.png")
    pixels = np.asarray(stored.convert("L")).astype(int)
    assert (pixels >= 250).mean() < 0.05  # the old code clipped: 89% white
    assert np.abs(pixels - grey8).mean() < 2.0  # the same picture as the 8-bit one (JPEG noise)
    assert check(stored).accepted


@pytest.mark.parametrize(
    ("mode", "values"),
    [
        ("I;16", lambda g: g.astype(np.uint16) * 257),
        ("I;16B", lambda g: (g.astype(np.uint16) * 257).astype(">u2")),
        ("I", lambda g: g.astype(np.int32) * 257),  # 16-bit data in a 32-bit mode
        ("F", lambda g: g.astype(np.float32) / 255),  # 0..1 floats
        ("F", lambda g: g.astype(np.float32) * 257),  # 0..65535 floats
    ],
)
def test_every_high_bit_depth_mode_becomes_the_same_8bit_picture(mode, values) -> None:
    grey8 = grey_face()[::4, ::4]
    image = Image.fromarray(values(grey8))
    assert image.mode == mode
    rgb = to_rgb8(image)
    assert rgb.mode == "RGB"
    assert np.abs(np.asarray(rgb.convert("L")).astype(int) - grey8).max() <= 1


def test_48bit_rgb_png_keeps_its_colours() -> None:
    """Pillow reads 16-bit-per-channel PNGs as RGB by the high byte: already scaled, not clipped."""
    rgb8 = np.asarray(astronaut())[::4, ::4]
    rgb16 = rgb8.astype(">u2") * 257
    stored = clean(_png16_rgb(rgb16), "rgb48.png")
    assert np.abs(np.asarray(stored).astype(int) - rgb8).mean() < 3.0


def _png16_rgb(pixels: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one): colour type 2, bit depth 16."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# -- 2. transparency ------------------------------------------------------------------------------


def _noisy_transparent(mode: str) -> tuple[Image.Image, np.ndarray]:
    """The astronaut in a centre disc; outside it alpha 0 over random colours. Returns the image
    and the boolean mask of its transparent pixels."""
    face = astronaut().resize((512, 512))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:512, :512]
    inside = (yy - 256) ** 2 + (xx - 256) ** 2 < 200**2
    rgb = np.where(inside[..., None], np.asarray(face), noise)
    alpha = np.where(inside, 255, 0).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8))
    if mode == "RGBA":
        return rgba, ~inside
    if mode == "LA":
        return rgba.convert("LA"), ~inside
    # Palette with one transparent index: quantize the colours, then point the outside at it.
    pal = Image.fromarray(rgb.astype(np.uint8)).quantize(255)
    index = np.asarray(pal).copy()
    index[~inside] = 255
    image = Image.frombytes("P", (512, 512), index.astype(np.uint8).tobytes())
    image.putpalette(pal.getpalette()[: 255 * 3] + [255, 0, 255])
    image.info["transparency"] = 255
    return image, ~inside


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_area_becomes_neutral_not_noise(mode: str) -> None:
    image, transparent = _noisy_transparent(mode)
    stored = np.asarray(clean(png(image), f"cutout-{mode}.png")).astype(int)
    yy, xx = np.mgrid[: transparent.shape[0], : transparent.shape[1]]
    edge = (yy - 256) ** 2 + (xx - 256) ** 2 > 216**2  # well outside the disc: no JPEG rim
    outside = stored[edge]
    assert np.abs(outside - np.array(NEUTRAL_BACKGROUND)).mean() < 1
    assert outside.std() < 2  # the old code kept the random colours: std ~74


def test_pa_and_keyed_transparency_are_composited_too() -> None:
    pa = Image.new("PA", (64, 64))
    pa.putpalette([255, 0, 0] * 256)
    assert np.asarray(to_rgb8(pa)).tolist()[0][0] == list(NEUTRAL_BACKGROUND)  # alpha 0: grey
    keyed = Image.new("RGB", (64, 64), (255, 0, 255))
    keyed.info["transparency"] = (255, 0, 255)  # a tRNS colour key
    assert to_rgb8(keyed).getpixel((0, 0)) == NEUTRAL_BACKGROUND


# -- 3. tiny images -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (1024, 90)])
def test_too_small_photo_says_so_and_how_large(size: tuple[int, int]) -> None:
    stored = clean(png(astronaut().resize(size)), "tiny.png")
    result = check(stored)
    assert (result.accepted, result.reason_code) == (False, "too_small")
    assert f"{size[0]}x{size[1]} px" in result.reason and f"at least {MIN_FACE_PX} px" in result.reason


# -- 4. huge real JPEGs ---------------------------------------------------------------------------


def big_jpeg(width: int, height: int) -> bytes:
    return jpeg(astronaut().resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def photo_108mp() -> bytes:
    """A 12000x9000 JPEG (a 108-megapixel phone photo) of the astronaut."""
    return big_jpeg(12000, 9000)


def test_108mp_jpeg_is_accepted_reduced_by_draft_decoding(photo_108mp: bytes) -> None:
    assert len(photo_108mp) <= MAX_BYTES
    stored = clean(photo_108mp, "phone.jpg")
    assert stored.size == (6000, 4500)  # 1/2 scale: the largest that fits 40 MP
    small = np.asarray(stored.resize((1024, 768))).astype(int)
    expected = np.asarray(astronaut().resize((1024, 768))).astype(int)
    assert np.abs(small - expected).mean() < 4  # the same picture


@pytest.mark.parametrize(
    ("width", "height", "decoded"), [(12000, 9000, [6000, 4500]), (7300, 5470, [7300, 5470])]
)
def test_peak_memory_of_the_largest_accepted_photo(width, height, decoded, tmp_path) -> None:
    """Peak RSS (VmHWM) in a fresh process, of the gateway's decode and of the photos worker's face
    check of the stored photo. Every accepted photo decodes to at most 40 MP (120 MB of RGB); the
    7300x5470 JPEG is the largest decoded bitmap there is. A full 108 MP bitmap alone is 324 MB."""
    canvas = Image.new("RGB", (width, height), (120, 120, 120))  # the face undistorted, centred
    canvas.paste(astronaut().resize((height, height)), ((width - height) // 2, 0))
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg(canvas))
    del canvas
    script = textwrap.dedent(
        f"""
        import io, json
        from PIL import Image
        from shared.faces import check_photo, detect_faces
        from shared.images import clean_upload

        def peak_mb():
            status = open("/proc/self/status").read().split("VmHWM:")[1]
            return int(status.split()[0]) / 1024

        def reset_peak():
            open("/proc/self/clear_refs", "w").write("5")
            return peak_mb()

        detect_faces(Image.new("RGB", (64, 64)))  # the models load outside the measurement
        raw = open({str(path)!r}, "rb").read()
        before = reset_peak()
        cleaned = clean_upload(raw, filename="p.jpg", max_bytes={MAX_BYTES}, max_pixels={MAX_PIXELS})
        upload = peak_mb() - before
        del raw
        before = reset_peak()
        check = check_photo(Image.open(io.BytesIO(cleaned.data)), min_face_px=128, blur_min_variance=40)
        size = [cleaned.width, cleaned.height]
        result = {{"upload_mb": upload, "check_mb": peak_mb() - before, "size": size, "ok": check.accepted}}
        print(json.dumps(result))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\npeak RSS above the process's baseline, {width}x{height} JPEG: {rss}")
    assert rss["size"] == decoded and rss["ok"]
    assert rss["upload_mb"] < 324  # gateway: less than one full 108 MP bitmap
    assert rss["check_mb"] < 480  # photos worker: under 4 copies of the largest bitmap (120 MB)


def _jpeg_header_claiming(width: int, height: int) -> bytes:
    """A tiny real JPEG whose SOF0 header claims width x height pixels."""
    raw = bytearray(jpeg(Image.new("RGB", (16, 16), (90, 90, 90))))
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(raw)


def test_absurd_headers_are_still_refused_before_decoding() -> None:
    for width, height in [(65000, 65000), (60000, 50000)]:  # even 1/8 is over 40 MP
        with pytest.raises(ImageRejected) as e:
            clean(_jpeg_header_claiming(width, height), "claims.jpg")
        assert e.value.status_code == 400 and f"{width}x{height}" in e.value.message
    with pytest.raises(ImageRejected) as e:  # PNG cannot decode reduced: over the limit, refused
        clean(png(Image.new("1", (8000, 6000))), "big.png")
    assert "8000x6000" in e.value.message and "40 megapixels" in e.value.message


# -- HEIC/HEIF (the iPhone camera's format) -------------------------------------------------------


def test_a_real_heic_photo_is_decoded_and_its_face_accepted() -> None:
    from tests.pictures import heic

    raw = heic(astronaut())
    assert raw[4:12] == b"ftypheic"  # what an iPhone writes
    stored = clean(raw, "IMG_0001.HEIC")
    assert stored.format == "JPEG" and stored.size == (1024, 1024)
    assert np.abs(np.asarray(stored).astype(int) - np.asarray(astronaut())).mean() < 6.0
    assert check(stored).accepted


def test_heic_orientation_is_applied_once_and_metadata_is_dropped() -> None:
    from tests.pictures import heic

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display, as a phone held upright writes
    exif[0x010F] = "Apple"
    exif[0x8825] = {2: (37.0, 33.0, 0.0), 1: "N"}  # GPS
    upright = astronaut().resize((600, 400))
    raw = heic(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    stored = clean(raw, "IMG_0002.HEIC")
    assert stored.size == (600, 400)  # turned back once: not left on its side, not turned twice
    assert np.abs(np.asarray(stored).astype(int) - np.asarray(upright)).mean() < 8.0
    assert not stored.getexif() and "exif" not in stored.info


def test_heic_over_the_pixel_limit_or_damaged_is_refused_with_a_sentence() -> None:
    from tests.pictures import heic

    raw = heic(astronaut())
    with pytest.raises(ImageRejected) as too_big:
        clean_upload(raw, filename="IMG_0003.HEIC", max_bytes=MAX_BYTES, max_pixels=1_000_000)
    assert too_big.value.status_code == 400
    assert too_big.value.message == "IMG_0003.HEIC is 1024x1024 pixels; the limit is 1 megapixels."
    with pytest.raises(ImageRejected) as cut:
        clean_upload(raw[: len(raw) // 3], filename="cut.heic", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert cut.value.status_code == 400 and "could not be read" in cut.value.message
