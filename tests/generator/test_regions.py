import numpy as np
from PIL import Image

from services.generator.regions import box_mask, grow_to_aspect, masked_crop, paste
from services.generator.stages.upscale import plan_tiles


def test_mask_is_dilated_and_blurred_box():
    mask = box_mask((100, 80), (40, 30, 60, 50), dilate=4, blur=4)
    assert mask.shape == (80, 100)
    assert mask[40, 50] == 1.0  # inside
    assert 0.0 < mask[40, 63] < 1.0  # feathered edge beyond the dilated box
    assert mask[40, 80] == 0.0 and mask[5, 5] == 0.0
    assert box_mask((100, 80), (40, 30, 60, 50), dilate=0, blur=0).sum() == 400


def test_crop_is_padded_square_inside_image():
    region = masked_crop((200, 300), (90, 100, 110, 140), dilate=4, blur=4, padding=32)
    x0, y0, x1, y1 = region.crop
    assert x1 - x0 == y1 - y0  # grown to the square processing size
    ys, xs = np.nonzero(region.mask)
    assert x0 <= xs.min() - 32 and xs.max() + 32 < x1 and y0 <= ys.min() - 32
    # near a border the crop shifts inside rather than leaving the image
    assert grow_to_aspect((0, 0, 10, 40), 1.0, (100, 100)) == (0, 0, 40, 40)
    assert grow_to_aspect((90, 0, 100, 40), 1.0, (100, 100)) == (60, 0, 100, 40)


def test_paste_changes_only_masked_pixels():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    region = masked_crop(image.size, (60, 40, 90, 70), dilate=4, blur=4, padding=16)
    patch = Image.new("RGB", (64, 64), (255, 0, 0))
    out = np.asarray(paste(image, patch, region))
    before = np.asarray(image)
    changed = (out != before).any(axis=2)
    assert changed.any()
    assert not changed[region.mask == 0].any()  # bit-exact outside the mask
    assert (out[55, 75] == (255, 0, 0)).all()  # fully replaced at the centre


def test_tiles_cover_and_blend_to_one():
    tiles = plan_tiles((256, 384), tile=128, padding=16, mask_blur=8, multiple=16)
    assert len(tiles) == 2 * 3
    assert {(t.window[2] - t.window[0], t.window[3] - t.window[1]) for t in tiles} == {(160, 160)}
    total = sum(t.weight for t in tiles)
    assert np.allclose(total, 1.0, atol=1e-5)
    for t in tiles:
        x0, y0, x1, y1 = t.window
        assert x0 >= 0 and x1 <= 256 and y0 >= 0 and y1 <= 384
        outside = t.weight.copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.max() == 0.0
