"""LoRA files that cannot apply fail once, with a sentence naming the file and the reason: a LoRA
for another base (SDXL keys, SDXL shapes), a damaged safetensors file, a kind no path applies.
Before, diffusers' loader raised ValueError/RuntimeError or safetensors SafetensorError deep in
the job, which the runner retried as an internal error until max_attempts."""

import uuid

import pytest
import torch
from safetensors.torch import save_file

from services.generator.lora_files import UnusableLora, inspect_lora, kohya_module_map
from services.generator.loras import ActiveLoras, LoraSpec
from shared import i18n
from tests.conftest import studio
from tests.generator.helpers import make_lora


def sdxl_shaped(pipe, path, *, metadata=None, te1=False) -> None:
    """A kohya LoRA whose cross-attention key/value take SDXL's 2048-wide text features (SD-1.5:
    768; the tiny model: 32), under the module names SDXL and SD-1.5 share."""
    modules = [k for k in kohya_module_map(pipe) if k.endswith(("attn2_to_k", "attn2_to_v"))]
    tensors = {}
    for module in modules:
        component, name = kohya_module_map(pipe)[module]
        out = getattr(pipe, component).get_submodule(name).weight.shape[0]
        tensors[f"{module}.lora_down.weight"] = torch.randn(4, 2048)
        tensors[f"{module}.lora_up.weight"] = torch.randn(out, 4)
        tensors[f"{module}.alpha"] = torch.tensor(4.0)
    if te1:
        tensors["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.randn(
            4, 768
        )
    save_file(tensors, str(path), metadata=metadata)


def test_the_checks_name_the_reason(tiny, tmp_path):
    pipe = tiny["base"]
    sdxl = tmp_path / "PerfectEyesXL.safetensors"
    sdxl_shaped(pipe, sdxl)
    with pytest.raises(UnusableLora) as err:
        inspect_lora(sdxl, pipe, "perfect eyes")
    assert str(err.value).startswith(
        "The style LoRA perfect eyes (PerfectEyesXL.safetensors) cannot be used:"
    )
    assert "another base model than SD-1.5" in str(err.value) and "4x2048" in str(err.value)

    for metadata, te1 in (({"ss_base_model_version": "sdxl_base_v1-0"}, False), (None, True)):
        sdxl_shaped(pipe, sdxl, metadata=metadata, te1=te1)
        with pytest.raises(UnusableLora, match="it was made for SDXL, and portraits are made with SD-1.5"):
            inspect_lora(sdxl, pipe, "perfect eyes")

    good = tmp_path / "good.safetensors"
    make_lora(pipe, good)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(good.read_bytes()[:200])
    with pytest.raises(UnusableLora) as err:
        inspect_lora(damaged, pipe, None)
    assert str(err.value).startswith(
        "Your likeness LoRA (damaged.safetensors) cannot be used: it is not a readable"
    )
    assert err.value.sentence.render("ko").startswith(
        "닮은꼴 LoRA 파일(damaged.safetensors)을 쓸 수 없습니다"
    )

    dora = tmp_path / "dora.safetensors"
    module = next(iter(kohya_module_map(pipe)))
    save_file(
        {f"{module}.lora_down.weight": torch.zeros(4, 4), f"{module}.dora_scale": torch.ones(1)}, str(dora)
    )
    with pytest.raises(UnusableLora, match="it holds DoRA .* weights, which cannot be applied yet"):
        inspect_lora(dora, pipe, "x")

    embedding = tmp_path / "easynegative.safetensors"
    save_file({"emb_params": torch.zeros(8, 768)}, str(embedding))
    with pytest.raises(UnusableLora, match="textual-inversion embedding"):
        inspect_lora(embedding, pipe, "x")

    checked = inspect_lora(good, pipe, None)  # the product's own files pass, every module checked
    assert checked.layout == "diffusers" and checked.modules and not checked.unmapped and not checked.bake


def test_nothing_is_loaded_when_one_file_of_a_job_is_unusable(tiny, tmp_path):
    pipe = tiny["base"]
    good, sdxl = tmp_path / "good.safetensors", tmp_path / "xl.safetensors"
    make_lora(pipe, good)
    sdxl_shaped(pipe, sdxl)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    specs = [LoraSpec("likeness", good, 1.0), LoraSpec("style_xl", sdxl, 0.5, name="xl")]
    with pytest.raises(UnusableLora, match=r"The style LoRA xl \(xl.safetensors\)"), ActiveLoras(pipe, specs):
        pass
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_job_with_an_unusable_likeness_file_fails_once_in_words(stack, tiny, tmp_path):
    from services.generator.tasks import generate_portraits_job
    from shared import storage
    from shared.db import session_scope
    from shared.jobs import run_job
    from shared.models import Likeness, Portrait
    from tests.generator.test_service import _ready_likeness
    from tests.generator.test_tasks import _job, _job_row, _new_user

    storage.ensure_bucket()
    uid = _new_user()
    likeness_id = _ready_likeness(uid)
    with session_scope() as session:
        key = session.get(Likeness, likeness_id).meta["files"]["diffusers"]
    sdxl = tmp_path / "xl.safetensors"
    sdxl_shaped(tiny["base"], sdxl)
    storage.put_bytes(key, sdxl.read_bytes(), "application/octet-stream")
    job_id = _job(uid, likeness_id, ["soft-beauty"], 1)
    run_job(job_id, generate_portraits_job)
    job = _job_row(job_id)
    assert (job.status.value, job.error_code, job.attempts) == ("failed", "unusable_lora", 1)  # no retry
    assert job.error_message.startswith(
        "Your likeness LoRA (pytorch_lora_weights.safetensors) cannot be used:"
    )
    assert "another base model than SD-1.5" in job.error_message
    (sentence,) = [i18n.Sentence.from_json(s) for s in job.result["error_sentences"]]
    assert sentence.render("ko").startswith(
        "닮은꼴 LoRA 파일(pytorch_lora_weights.safetensors)을 쓸 수 없습니다"
    )
    with session_scope() as session:
        assert session.query(Portrait).filter(Portrait.job_id == job_id).count() == 0
    assert uuid.UUID(str(job_id))


def test_studio_generate_exits_2_with_the_sentence(tiny, tmp_path):
    sdxl = tmp_path / "likeness-zuvek.safetensors"
    sdxl_shaped(tiny["base"], sdxl, metadata={"studio_trigger_word": "zuvek"})
    done = studio(
        "generate", "--style", "soft-beauty", "--out", str(tmp_path / "out"), "--likeness", str(sdxl),
        "--seed", "1", "--preset", "tiny", "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    words = " ".join(done.stderr.split())
    assert (
        "Your likeness LoRA (likeness-zuvek.safetensors) cannot be used: it was made for another base"
        in words
    )
    assert not list((tmp_path / "out").glob("*.png"))
