"""The web page downloads the likeness (issue 23 item 9), in both formats the API offers: `kohya`
(A1111/ComfyUI) and `diffusers` (load_lora_weights); each click saves a file (S3 answers the presigned
link as an attachment) under the format's file name. In English and in Korean."""

import uuid
from pathlib import Path

import pytest

from shared import storage
from shared.db import session_scope
from shared.models import Likeness
from tests.conftest import Api
from tests.web.conftest import Shots, Web
from tests.web.helpers import sign_in


def _ready_likeness(user_id: uuid.UUID) -> dict[str, bytes]:
    """A ready likeness of `user_id` with both LoRA files in S3; returns the bytes by format."""
    files = {"kohya": b"kohya-format LoRA bytes", "diffusers": b"diffusers-format LoRA bytes"}
    with session_scope() as session:
        likeness = Likeness(user_id=user_id, status="ready", class_word="person", trigger_word="ohwx",
                            base_model="tiny", meta={"files": {}})  # fmt: skip
        session.add(likeness)
        session.flush()
        keys = {}
        for fmt, data in files.items():
            name = "lora_kohya.safetensors" if fmt == "kohya" else "pytorch_lora_weights.safetensors"
            keys[fmt] = storage.user_key(user_id, "likenesses", str(likeness.id), fmt, name)
            storage.put_bytes(keys[fmt], data, "application/octet-stream")
        likeness.meta = {"files": keys}
    return files


@pytest.mark.parametrize(
    ("locale", "labels"),
    [
        (
            "en",
            {"kohya": "For A1111 / ComfyUI (.safetensors)", "diffusers": "For diffusers (load_lora_weights)"},
        ),
        ("ko", {"kohya": "A1111 / ComfyUI용 (.safetensors)", "diffusers": "diffusers용 (load_lora_weights)"}),
    ],
)
def test_the_page_downloads_the_likeness_in_both_formats(
    web: Web, api: Api, shots: Shots, locale: str, labels: dict[str, str]
) -> None:
    user = api.new_user()
    files = _ready_likeness(uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"]))
    page = web.page()
    sign_in(page, user, "#/train")
    page.select_option("#lang", locale)
    for fmt, label in labels.items():
        button = page.get_by_role("button", name=label)
        with page.expect_download() as got:
            button.click()
        assert Path(got.value.path()).read_bytes() == files[fmt]
        if fmt == "diffusers":
            assert got.value.suggested_filename == "pytorch_lora_weights.safetensors"
        else:
            assert got.value.suggested_filename.endswith(".safetensors")
    shots(page, f"likeness-download-{locale}")
