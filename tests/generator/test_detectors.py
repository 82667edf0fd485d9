"""The detailer's detectors with real detections: a tiny YOLO trained here on synthetic images,
and dlib's face detector on a real photo (skimage's astronaut)."""

import numpy as np
import pytest
import torch
from PIL import Image

from services.generator.detectors import DlibFaceDetector, YoloDetector, offline_ultralytics
from services.generator.prompts import encode_prompt_pair
from services.generator.regions import masked_crop
from services.generator.stages.detailer import DetailerStage
from tests.generator.helpers import face_pass

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


def test_load_detector_falls_back_to_dlib_without_weights(tmp_path, monkeypatch):
    from services.generator.detectors import load_detector
    from shared.config import get_settings

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert isinstance(load_detector("face"), DlibFaceDetector)
        assert load_detector("hand") is None
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
