from pathlib import Path

import pytest

from services.generator.pose import POSES_DIR
from shared.styles import StyleError, load_style_file, load_styles


def test_every_shipped_style_is_valid_and_complete():
    styles = load_styles()
    assert len(styles) >= 8
    for style in styles.values():
        assert "{likeness}" in style.prompt, style.id
        assert style.description.ko and style.description.en
        assert style.pose is None or (POSES_DIR / f"{style.pose}.json").is_file(), style.id
        assert 0.3 <= style.beautify.denoise <= 0.45
        assert {p.detector for p in style.detailer} <= {"face", "hand"}
        assert any("{likeness}" in p.prompt for p in style.detailer if p.detector == "face")
        assert style.upscale.factor == 2.0


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_invalid_style_names_the_file_and_field(tmp_path):
    good = (Path(__file__).parents[2] / "shared/styles/studio-business.yaml").read_text()
    bad = good.replace("denoise: 0.35\n  steps: 20\n  cfg: 6.0", "denoise: 0.9\n  steps: 20\n  cfg: 6.0")
    assert bad != good
    with pytest.raises(StyleError, match=r"studio-business.yaml: beautify.denoise"):
        load_style_file(_write(tmp_path, "studio-business", bad))
    with pytest.raises(StyleError, match="must equal the file name"):
        load_style_file(_write(tmp_path, "other-name", good))
    with pytest.raises(StyleError, match="unknown sampler"):
        load_style_file(_write(tmp_path, "studio-business", good.replace("DPM++ 2M Karras", "X")))
    with pytest.raises(StyleError, match="extra_field: Extra inputs"):
        load_style_file(_write(tmp_path, "studio-business", good + "extra_field: 1\n"))


def test_styles_name_models_of_the_manifest():
    from shared.ml.registry import get_spec

    for style in load_styles().values():
        assert get_spec(style.base_model).kind in ("checkpoint", "diffusers")
        assert get_spec(style.upscale.upscaler).kind == "upscaler"
        for lora in style.loras:
            assert get_spec(lora.name).kind == "lora", (style.id, lora.name)


SHIPPED = sorted((Path(__file__).parents[2] / "shared/styles").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_style_naming_an_unknown_lora_is_refused_when_styles_load(path, tmp_path):
    """Every shipped style loads, and the same style refuses an unknown LoRA, by tag or by list,
    and LoRA tags outside its main prompt (they used to fail the job as an internal error)."""
    good = path.read_text()
    load_style_file(path)
    tagged = good.replace('\nprompt: "', '\nprompt: "<lora:no_such_lora:0.8> ', 1)
    assert tagged != good
    with pytest.raises(StyleError, match=f"{path.name}: LoRA 'no_such_lora' is not a model"):
        load_style_file(_write(tmp_path, path.stem, tagged))
    listed = good.replace("\nloras:\n", "\nloras:\n  - name: no_such_lora\n    weight: 0.5\n", 1)
    assert listed != good
    with pytest.raises(StyleError, match="no_such_lora"):
        load_style_file(_write(tmp_path, path.stem, listed))
    escape = good.replace('\nprompt: "', '\nprompt: "<lora:/etc/passwd:1> ', 1)
    with pytest.raises(StyleError, match="/etc/passwd"):
        load_style_file(_write(tmp_path, path.stem, escape))
    not_a_lora = good.replace('\nprompt: "', '\nprompt: "<lora:realesrgan_x4plus:1> ', 1)
    with pytest.raises(StyleError, match="not a LoRA"):
        load_style_file(_write(tmp_path, path.stem, not_a_lora))


def test_lora_tags_outside_the_main_prompt_are_refused(tmp_path):
    good = (Path(__file__).parents[2] / "shared/styles/studio-business.yaml").read_text()
    bad = good.replace('\nbeautify:\n  prompt: "', '\nbeautify:\n  prompt: "<lora:lora_film:1> ', 1)
    assert bad != good
    with pytest.raises(StyleError, match="only allowed in the main prompt"):
        load_style_file(_write(tmp_path, "studio-business", bad))


def test_a_preview_must_be_an_image_file_inside_the_styles_folder(tmp_path):
    """A style that names a preview must have it, inside the styles folder."""
    shipped = (Path(__file__).parents[2] / "shared/styles/studio-business.yaml").read_text()
    assert "\npreview: previews/studio-business.svg\n" in shipped
    good = shipped.replace("\npreview: previews/studio-business.svg\n", "\npreview: null\n")
    named = good.replace("\npreview: null\n", "\npreview: studio-business.jpg\n")
    with pytest.raises(StyleError, match="preview 'studio-business.jpg' does not exist"):
        load_style_file(_write(tmp_path, "studio-business", named))
    (tmp_path / "studio-business.jpg").write_bytes(b"\xff\xd8\xff")
    assert load_style_file(_write(tmp_path, "studio-business", named)).preview == "studio-business.jpg"
    outside = good.replace("\npreview: null\n", "\npreview: ../secret.jpg\n")
    with pytest.raises(StyleError, match="inside"):
        load_style_file(_write(tmp_path, "studio-business", outside))
    with pytest.raises(StyleError, match="inside"):
        load_style_file(_write(tmp_path, "studio-business", named.replace(".jpg", ".yaml")))


def test_every_style_ships_the_sample_card_its_yaml_draws() -> None:
    """The picker's previews (issue 23 item 8): each style has a `look` and a preview file that is
    exactly what services/generator/style_cards.py draws from it (re-run `python -m
    services.generator.style_cards` after changing a look or a pose template)."""
    import xml.etree.ElementTree as ET

    from services.generator.style_cards import card_path, render_card
    from shared.styles import STYLES_DIR, preview_path

    styles = load_styles()
    drawn = {}
    for style in styles.values():
        assert style.look is not None, style.id
        assert preview_path(style) == card_path(style).resolve(), style.id
        text = render_card(style)
        assert card_path(style).read_text(encoding="utf-8") == text, f"{style.id}: card out of date"
        root = ET.fromstring(text)
        assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 512 768"
        assert style.look.backdrop[0] in text and style.look.wardrobe in text
        assert text.count("<line") >= 5, f"{style.id}: no pose skeleton"  # the pose the style uses
        drawn[style.id] = text
    assert len(set(drawn.values())) == len(drawn) == len(list(STYLES_DIR.glob("*.yaml")))
