"""The whole five-stage pipeline on the tiny preset, and the likeness/identity pieces."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from services.generator.likeness import identity_score, load_likeness
from services.generator.metadata import read_png_metadata
from services.generator.pipeline import PortraitPipeline, Scale, scale_style
from services.generator.resident import ResidentModels
from shared.styles import get_style
from tests.generator.helpers import FixedDetector, make_lora

# NaN in an image (diffusers warns when casting it) is a failure, not a warning.
pytestmark = pytest.mark.filterwarnings("error:invalid value encountered:RuntimeWarning")
SMALL = Scale(width=64, height=96, steps=2, detail_size=64, tile=64, padding=16)


@pytest.fixture(scope="module")
def astronaut():
    from skimage.data import astronaut

    return Image.fromarray(astronaut())


@pytest.fixture(scope="module")
def likeness_dir(tiny, astronaut, tmp_path_factory):
    from shared.faces import detect_faces, face_embedding

    folder = tmp_path_factory.mktemp("likeness")
    make_lora(tiny["base"], folder / "pytorch_lora_weights.safetensors", seed=7)
    (folder / "likeness.json").write_text(json.dumps({"trigger_word": "sks", "class_word": "woman"}))
    face = detect_faces(astronaut)[0]
    np.save(folder / "embeddings.npy", face_embedding(astronaut, face)[None, :])
    return folder


def _pipeline(tiny) -> PortraitPipeline:
    models = ResidentModels(
        base=tiny["base"],
        controlnet_openpose=tiny["openpose"],
        controlnet_tile=tiny["tile"],
        upscaler=tiny["upscaler"],
        detectors={"face": FixedDetector([(20, 20, 44, 50)]), "hand": None},
        preset="tiny",
        base_name="tiny",
        hashes={"base": "0123456789"},
    )
    return PortraitPipeline(models, scale=SMALL, batch_size=2)


def test_five_stages_end_to_end(tiny, likeness_dir):
    pipeline = _pipeline(tiny)
    stages = []
    results = pipeline(
        likeness_dir, get_style("film-outdoor"), seed=11, count=2, progress=lambda f, s: stages.append((f, s))
    )
    assert [s for _, s in stages] == ["txt2img", "detail", "beautify", "detail2", "upscale", "done"]
    assert [f for f, _ in stages] == sorted(f for f, _ in stages)
    assert sorted(r.seed for r in results) == [11, 12]
    for result in results:
        assert result.image.size == (128, 192)  # 64x96, upscaled 2x
        assert result.face_found is False and result.identity_score is None  # noise: no face
        parameters, meta = read_png_metadata(result.png)
        assert parameters.startswith("outdoor portrait photo of sks woman")
        assert "<lora:likeness-sks:1>" in parameters  # the name of the file users download
        assert f"Seed: {result.seed}, Size: 64x96" in parameters
        assert "Lora hashes: " in parameters and "Model hash: 0123456789" in parameters
        assert meta["style"] == "film-outdoor" and meta["seed"] == result.seed
        assert meta["loras_skipped"] == ["lora_film"]  # real style LoRAs do not fit tiny models
        assert meta["loras"][0]["name"] == "likeness" and len(meta["loras"][0]["hash"]) == 10
        assert meta["detailer"][0]["detections"]["face"][0]["box"] == [20, 20, 44, 50]
        assert meta["detailer"][0]["detectors"] == {"face": "fixed"}  # the detector that ran
        assert "ADetailer model: fixed" in parameters
    assert not any("lora" in k for k in tiny["base"].unet.state_dict())  # unloaded after the job

    again = pipeline(likeness_dir, get_style("film-outdoor"), seed=11, count=2)
    assert [r.png for r in again] == [r.png for r in results]  # same seed, same bytes


def test_lora_names_are_sanitized_in_the_infotext_as_a1111_does(tiny, likeness_dir, tmp_path):
    """A name with ":" or "," would break A1111's `Lora hashes: "a: h, b: h"` parsing: A1111
    drops both characters (extra_networks_lora.py); the JSON metadata keeps the name as is."""
    from shared.styles import StyleLora

    name = "film, v2: beta"
    path = tmp_path / f"{name}.safetensors"  # A1111 names a LoRA by its file stem
    make_lora(tiny["base"], path, seed=9)
    style = get_style("film-outdoor").model_copy(update={"loras": (StyleLora(name=name, weight=0.5),)})
    pipeline = _pipeline(tiny)
    pipeline._resolve_lora = lambda _name: path
    (result,) = pipeline(likeness_dir, style, seed=3, count=1)
    parameters, meta = read_png_metadata(result.png)
    hashes = json.loads(re.search(r'Lora hashes: ("[^"]*")', parameters).group(1))
    pairs = [item.split(": ") for item in hashes.split(", ")]  # A1111's reading of the field
    assert [p[0] for p in pairs] == ["film v2 beta", "likeness-sks"] and all(len(p) == 2 for p in pairs)
    assert "<lora:film v2 beta:0.5>" in parameters.splitlines()[0]
    assert [lora["name"] for lora in meta["loras"]] == [name, "likeness"]


def test_likeness_loading_and_identity_score(likeness_dir, astronaut):
    likeness = load_likeness(likeness_dir)
    assert likeness.words == "sks woman"
    assert likeness.reference_embeddings.shape == (1, 128)
    from shared.faces import detect_faces, face_embedding

    shifted = astronaut.crop((20, 10, 500, 470)).resize((400, 384))
    same = face_embedding(shifted, detect_faces(shifted)[0])
    score = identity_score(same, likeness.reference_embeddings)
    assert score is not None and score > 0.8  # the same face, another crop and scale
    assert identity_score(np.zeros(128, np.float32), likeness.reference_embeddings) < score
    assert identity_score(same, np.zeros((0, 128), np.float32)) is None


def test_send_to_txt2img_reproduces_what_a1111_can(tiny, likeness_dir, tmp_path):
    """The infotext read by a port of A1111's own parser (tests/generator/a1111_infotext.py):
    no Hires fix, the LoRAs found by the hash of the user's files, the first-pass size,
    sd-webui-controlnet's unit with the drawn pose, ADetailer's face and hand units, Ultimate SD
    Upscale's keys, and the product's other passes under its own key."""
    from services.generator.metadata import A1111_CONTROLNET, a1111_lora_hash
    from shared.styles import StyleLora
    from tests.generator import a1111_infotext as a1111

    style_file = tmp_path / "FilmVelvia3.safetensors"
    make_lora(tiny["base"], style_file, seed=9)
    style = get_style("film-outdoor").model_copy(update={"loras": (StyleLora(name="lora_film", weight=0.6),)})
    pipeline = _pipeline(tiny)
    pipeline._resolve_lora = lambda _name: style_file
    (result,) = pipeline(likeness_dir, style, seed=5, count=1)
    parameters, meta = read_png_metadata(result.png)
    d = a1111.parse_generation_parameters(parameters)

    assert not a1111.txt2img_enable_hr(d) and "Denoising strength" not in d
    assert (d["Size-1"], d["Size-2"], d["Seed"], d["Steps"]) == ("64", "96", "5", "2")
    assert d["Prompt"].endswith("<lora:FilmVelvia3:0.6> <lora:likeness-sks:1>")
    # The user's files: the style's as downloaded, the likeness's kohya file (its hash is carried
    # in the diffusers file's metadata, here absent: the file's own addnet hash).
    on_disk = {
        a1111_lora_hash(style_file): "FilmVelvia3",
        a1111_lora_hash(likeness_dir / "pytorch_lora_weights.safetensors"): "likeness-sks",
    }
    a1111.lora_infotext_pasted(d, on_disk)
    assert "<lora:FilmVelvia3:0.6>" in d["Prompt"] and "<lora:likeness-sks:1>" in d["Prompt"]
    assert all(re.fullmatch(r"[0-9a-f]{12}", h.split(": ")[1]) for h in d["Lora hashes"].split(", "))

    unit = dict(item.split(": ", 1) for item in d["ControlNet 0"].split(", "))
    assert (
        unit["Module"] == "none"
        and unit["Model"] == A1111_CONTROLNET["openpose"] == "control_v11p_sd15_openpose [cab727d4]"
    )
    face, hand = scale_style(style, SMALL).detailer  # as the pipeline ran it
    assert d["ADetailer model"] == "fixed" and d["ADetailer denoising strength"] == str(face.denoise)
    assert (
        d["ADetailer prompt"].startswith("(detailed face:1.2) of sks woman")
        and "<lora:likeness-sks:1>" in d["ADetailer prompt"]
    )
    assert (d["ADetailer steps"], d["ADetailer CFG scale"]) == (str(face.steps), str(face.cfg))
    assert d["ADetailer denoising strength 2nd"] == str(hand.denoise) and "ADetailer model 2nd" in d
    assert d["Ultimate SD upscale upscaler"] == "R-ESRGAN 4x+" and d["Ultimate SD upscale tile_width"] == "64"
    assert "Ultimate SD upscale denoise" not in d  # no such USDU key: its denoise is under the product's
    product = json.loads(d["Portrait Studio"])
    assert product["size"] == [128, 192] and product["upscale"]["denoise"] == style.upscale.denoise
    assert (
        product["beautify"]["denoise"] == style.beautify.denoise and product["detailer_again_after_beautify"]
    )
    assert [lora["a1111_name"] for lora in meta["loras"]] == ["FilmVelvia3", "likeness-sks"]


def test_the_png_carries_a_comfyui_graph_of_the_five_stages(tiny, likeness_dir):
    """ComfyUI's `prompt` chunk: validated as ComfyUI validates a queued prompt (schemas of core
    nodes, Impact Pack's FaceDetailer and UltimateSDUpscale ported in comfy_validate.py)."""
    from PIL import Image as PILImage

    from tests.generator.comfy_validate import validate_prompt

    (result,) = _pipeline(tiny)(likeness_dir, get_style("film-outdoor"), seed=5, count=1)
    with PILImage.open(io.BytesIO(result.png)) as im:
        graph = json.loads(im.text["prompt"])
    assert validate_prompt(graph) == []
    kinds = [node["class_type"] for node in graph.values()]
    assert kinds.count("FaceDetailer") == 4  # face and hand, before and after beautify
    assert {"ControlNetApplyAdvanced", "UltimateSDUpscale", "SaveImage", "LoraLoader"} <= set(kinds)
    (lora,) = [n["inputs"] for n in graph.values() if n["class_type"] == "LoraLoader"]
    assert lora["lora_name"] == "likeness-sks.safetensors"
    samplers = [n for n in graph.values() if n["class_type"] == "KSampler"]
    assert [n["_meta"]["title"] for n in samplers] == ["1. txt2img", "3. beautify"]
    assert samplers[1]["inputs"]["denoise"] == get_style("film-outdoor").beautify.denoise
    assert (
        samplers[0]["inputs"]["sampler_name"] == "dpmpp_2m" and samplers[0]["inputs"]["scheduler"] == "karras"
    )

    broken = json.loads(json.dumps(graph))  # the checker does fail: a wrong link, a value out of range
    ksampler = next(k for k, n in broken.items() if n["class_type"] == "KSampler")
    broken[ksampler]["inputs"]["positive"] = broken[ksampler]["inputs"]["model"]
    broken[ksampler]["inputs"]["denoise"] = 1.5
    assert len(validate_prompt(broken)) == 2


def test_the_openpose_controlnet_sees_the_skeleton_unstretched(tiny, likeness_dir):
    """The skeleton is drawn at the generation's width x height: drawn at height x width (swapped)
    and resized back, the ControlNet would see a stretched body (the test sizes are not square)."""
    from services.generator.pose import load_pose
    from shared.pose import draw_pose

    seen = []

    def capture(module, args, kwargs):  # noqa: ANN001, ANN202
        seen.append(kwargs["controlnet_cond"].detach().float().cpu())

    hook = tiny["openpose"].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        _pipeline(tiny)(likeness_dir, get_style("film-outdoor"), seed=3, count=1)
    finally:
        hook.remove()
    assert seen, "the OpenPose ControlNet never ran"
    expected = np.asarray(draw_pose(load_pose("half_body_relaxed"), SMALL.width, SMALL.height)) / 255.0
    control = seen[0][0].permute(1, 2, 0).numpy()  # the first image of the batch, HWC in [0, 1]
    assert control.shape == expected.shape == (SMALL.height, SMALL.width, 3)
    assert np.abs(control - expected).mean() < 0.01, np.abs(control - expected).mean()


def test_pngs_encoded_in_parallel_are_the_ones_encoded_alone_in_order():
    from PIL import Image

    from services.generator.metadata import png_bytes, png_bytes_many

    items = [
        (Image.effect_noise((96, 64), 10 + k).convert("RGB"), f"seed {k}", {"seed": k}, {"1": {"k": k}})
        for k in range(5)
    ]
    assert png_bytes_many(items) == [png_bytes(*item) for item in items]
    assert [read_png_metadata(png)[1]["seed"] for png in png_bytes_many(items)] == list(range(5))
