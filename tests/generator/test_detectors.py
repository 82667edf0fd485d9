"""The detailer's detectors with real detections: a tiny YOLO trained here on synthetic images,
dlib's and MediaPipe's face detectors on a real photo (skimage's astronaut), MediaPipe's hands on a
real photo (ultralytics' zidane.jpg); which detector runs without YOLO weights; working sizes."""

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from services.generator.detectors import (
    DlibFaceDetector,
    MediaPipeFaceDetector,
    MediaPipeHandDetector,
    YoloDetector,
    offline_ultralytics,
)
from services.generator.prompts import encode_prompt_pair
from services.generator.regions import masked_crop
from services.generator.stages.detailer import DetailerStage, working_size
from tests.generator.helpers import FixedDetector, face_pass

SIZE = 64
STEPS = 200


def _synthetic(rng, n):
    """Grey noise with one red square ("face") each; returns images and true boxes."""
    images, boxes = [], []
    for _ in range(n):
        image = rng.integers(60, 140, (SIZE, SIZE, 3), dtype=np.uint8)
        s = int(rng.integers(14, 24))
        x, y = (int(v) for v in rng.integers(0, SIZE - s, 2))
        image[y : y + s, x : x + s] = (230, 40, 40)
        images.append(image)
        boxes.append((x, y, x + s, y + s))
    return images, boxes


@pytest.fixture(scope="module")
def toy_yolo(tmp_path_factory):
    """YOLOv8 (yolov8n.yaml, width 0.125) trained from scratch for 200 steps: ~25 s of CPU."""
    offline_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    cfg = yaml_model_load("yolov8n.yaml")
    cfg["scales"]["n"] = [0.33, 0.125, 1024]
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=1, verbose=False)
    model.args = get_cfg()  # the loss gains
    model.names = {0: "face"}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS, eta_min=3e-4)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(STEPS):
        images, boxes = _synthetic(rng, 16)
        xywh = [
            ((a + c) / 2 / SIZE, (b + d) / 2 / SIZE, (c - a) / SIZE, (d - b) / SIZE) for a, b, c, d in boxes
        ]
        batch = {
            "img": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255,
            "batch_idx": torch.arange(16).float(),
            "cls": torch.zeros(16, 1),
            "bboxes": torch.tensor(xywh).float(),
        }
        loss, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        schedule.step()
    model.eval()
    path = tmp_path_factory.mktemp("yolo") / "toy_face.pt"
    torch.save({"model": model, "train_args": {"task": "detect", "imgsz": SIZE}}, path)
    return path


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _embeds(base):
    return encode_prompt_pair(base.tokenizer, base.text_encoder, "detailed face", "blurry")


def _check_local(before, after, regions):
    a, b = np.asarray(before), np.asarray(after)
    changed = (a != b).any(axis=2)
    inside = np.zeros(changed.shape, bool)
    for region in regions:
        inside |= region.mask > 0
    assert changed[inside].mean() > 0.5
    assert not changed[~inside].any()


def test_yolo_finds_objects_and_detailer_inpaints_there(toy_yolo, tiny):
    detector = YoloDetector(toy_yolo, device="cpu")
    arrays, truth = _synthetic(np.random.default_rng(123), 3)
    images = [Image.fromarray(a) for a in arrays]
    found = detector(images, confidence=0.3)
    for detections, box in zip(found, truth, strict=True):
        assert detections, "the toy detector missed an object"
        assert _iou(detections[0].box, box) > 0.5, (detections[0].box, box)

    params = face_pass(confidence=0.3, padding=8, max_boxes=1)
    stage = DetailerStage(tiny["base"], {"face": detector, "hand": None})
    out, reports = stage(images, [params], lambda p: _embeds(tiny["base"]), [1, 2, 3])
    for before, after, report in zip(images, out, reports, strict=True):
        (det,) = report.detections["face"]
        region = masked_crop(before.size, det.box, dilate=4, blur=4, padding=8)
        _check_local(before, after, [region])


def test_dlib_detects_a_real_face_and_detailer_inpaints_there(tiny):
    from skimage.data import astronaut

    image = Image.fromarray(astronaut()).resize((256, 256))
    detector = DlibFaceDetector()
    (faces,) = detector([image], confidence=0.3)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert 80 < (x0 + x1) / 2 < 140 and 30 < (y0 + y1) / 2 < 90  # her face, not the patch

    stage = DetailerStage(tiny["base"], {"face": detector, "hand": None})
    (out,), (report,) = stage([image], [face_pass(padding=16)], lambda p: _embeds(tiny["base"]), [4])
    region = masked_crop(image.size, faces[0].box, dilate=4, blur=4, padding=16)
    _check_local(image, out, [region])
    assert report.regions == [region.crop]


def test_load_detector_uses_mediapipe_without_yolo_weights(tmp_path, monkeypatch, caplog):
    from services.generator.detectors import load_detector
    from shared.config import get_settings

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    levels = {}
    try:
        for preset in ("tiny", "sd15"):  # tiny has no YOLO weights by design: said, not warned
            monkeypatch.setenv("MODEL_PRESET", preset)
            get_settings.cache_clear()
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="services.generator.detectors"):
                assert isinstance(load_detector("face"), MediaPipeFaceDetector)
                assert isinstance(load_detector("hand"), MediaPipeHandDetector)
            said = " ".join(r.getMessage() for r in caplog.records)
            assert "face detailer pass uses mediapipe_face_full" in said
            assert "hand detailer pass uses mediapipe_hands" in said
            levels[preset] = {r.levelname for r in caplog.records}
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert levels == {"tiny": {"INFO"}, "sd15": {"WARNING"}}


def test_mediapipe_face_on_a_real_photo_and_the_detailer_records_it(tiny):
    from skimage.data import astronaut, chelsea

    image = Image.fromarray(astronaut())
    (faces,) = MediaPipeFaceDetector()([image], confidence=0.5)
    assert len(faces) == 1 and faces[0].score > 0.85
    x0, y0, x1, y1 = faces[0].box
    assert abs((x0 + x1) / 2 - 226) < 15 and abs((y0 + y1) / 2 - 120) < 15 and 80 < x1 - x0 < 130
    assert MediaPipeFaceDetector()([Image.fromarray(chelsea())], confidence=0.5) == [[]]  # a cat

    small = image.resize((128, 128))
    stage = DetailerStage(tiny["base"], {"face": MediaPipeFaceDetector(), "hand": None})
    params = face_pass(padding=8, confidence=0.5)
    (out,), (report,) = stage([small], [params], lambda p: _embeds(tiny["base"]), [4])
    assert report.detectors == {"face": "mediapipe_face_full"}
    assert report.to_json()["detectors"] == {"face": "mediapipe_face_full"}
    (face,) = report.detections["face"]
    _check_local(small, out, [masked_crop(small.size, face.box, dilate=4, blur=4, padding=8)])


def test_mediapipe_hands_on_a_real_photo():
    origin = importlib.util.find_spec("ultralytics").submodule_search_locations[0]
    image = Image.open(Path(origin) / "assets" / "zidane.jpg").convert("RGB")  # 1280 x 720
    (hands,) = MediaPipeHandDetector()([image], confidence=0.5)
    assert len(hands) == 1 and hands[0].label == "hand" and hands[0].score > 0.9
    assert _iou(hands[0].box, (990, 408, 1158, 488)) > 0.7, hands[0].box  # the raised hand, right


def test_working_size_keeps_the_aspect_and_never_goes_below_native():
    assert working_size((0, 0, 100, 100), 512, 8) == (512, 512)  # small: upscaled, as A1111
    assert working_size((0, 0, 100, 140), 512, 8) == (368, 512)  # not squashed to a square
    assert working_size((0, 64, 512, 704), 512, 8) == (512, 640)  # already large: native size
    assert working_size((0, 0, 1100, 900), 512, 8) is None  # past 2 x size: skipped


class _Recording:
    """Wraps the stage's inpaint pipeline and records the size of every call."""

    def __init__(self, derived):
        self.derived, self.sizes = derived, []

    def __call__(self, sampler):
        pipe = self.derived(sampler)

        def call(**kwargs):
            self.sizes.append((kwargs["width"], kwargs["height"]))
            return pipe(**kwargs)

        return call


def test_a_face_taller_than_the_image_is_wide_is_not_squashed_or_shrunk(tiny):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 64, 3), dtype=np.uint8))
    stage = DetailerStage(tiny["base"], {"face": FixedDetector([(4, 8, 60, 88)]), "hand": None})
    stage.derived = recording = _Recording(stage.derived)
    (out,), (report,) = stage([image], [face_pass(padding=16)], lambda p: _embeds(tiny["base"]), [1])
    assert report.regions == [(0, 0, 64, 96)]  # could not grow to a square inside 64 px
    assert recording.sizes == [(64, 96)]  # worked at its own size and aspect, not 64 x 64
    assert out.size == image.size and np.asarray(out).tolist() != np.asarray(image).tolist()

    big = image.resize((160, 160))  # a crop past 2 x the pass size (64): skipped, and said why
    stage.detectors = {"face": FixedDetector([(10, 10, 150, 150)]), "hand": None}
    (same,), (report,) = stage([big], [face_pass(padding=16)], lambda p: _embeds(tiny["base"]), [1])
    assert np.array_equal(np.asarray(same), np.asarray(big)) and report.regions == []
    assert "160x160 px is larger than 128 px" in report.skipped[0]
