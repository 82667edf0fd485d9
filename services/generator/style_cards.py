"""Sample cards of the styles: an SVG per style drawn from its YAML (`look`: backdrop, light, scene,
wardrobe) over the silhouette and OpenPose skeleton of its pose template (`pose`).

The style picker shows them (`preview: previews/<id>.svg`): they tell the looks apart without model
weights, where a picture from random or tiny weights would be noise. They are files in the repository,
made by `python -m services.generator.style_cards` after a style's `look` or pose changes; a test
checks that each file is what this module draws.
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.generator.pose import load_pose
from shared.pose import COLORS, LIMBS, place
from shared.styles import STYLES_DIR, Look, Style, load_styles

WIDTH, HEIGHT = 512, 768  # the pose templates' canvas (2:3), drawn at 240 x 360
PREVIEWS = "previews"
# Where the key light's glow sits (cx, cy, r as fractions of the card) per `look.light`.
LIGHT_SPOT = {
    "left": (0.0, 0.3, 0.9),
    "right": (1.0, 0.3, 0.9),
    "front": (0.5, 0.25, 0.8),
    "back": (0.5, 0.15, 0.6),
    "soft": (0.5, 0.4, 1.1),
}


def _rgb(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _scene(look: Look) -> list[str]:
    """Shapes behind the person that say where the portrait is taken."""
    accent = look.accent or look.backdrop[1]
    if look.scene == "window":  # a window pane on the light's side, its light falling in
        x = 24 if look.light != "right" else WIDTH - 224
        return [
            f'<rect x="{x}" y="60" width="200" height="300" rx="6" fill="{look.light_colour}" '
            'opacity="0.55"/>',
            f'<path d="M{x + 100} 60v300M{x} 210h200" stroke="{accent}" stroke-width="10"/>',
        ]
    if look.scene == "street":  # buildings out of focus
        return [
            f'<rect x="{x}" y="{y}" width="{w}" height="{HEIGHT}" fill="{accent}" opacity="{o}"/>'
            for x, y, w, o in (
                (0, 120, 120, 0.5),
                (140, 40, 90, 0.35),
                (330, 90, 110, 0.45),
                (450, 180, 70, 0.3),
            )
        ]
    if look.scene == "park":  # foliage bokeh and the low sun behind
        circles = ((60, 150, 70), (170, 90, 50), (400, 120, 80), (470, 260, 50), (90, 330, 45))
        return [
            *(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{accent}" opacity="0.45"/>' for x, y, r in circles),
            f'<circle cx="330" cy="150" r="60" fill="{look.light_colour}" opacity="0.7"/>',
        ]
    if look.scene == "colour_block":  # a bold second colour across the backdrop
        return [f'<path d="M0 {HEIGHT}L{WIDTH} 220V{HEIGHT}Z" fill="{accent}"/>']
    return []


def _figure(style: Style, look: Look) -> list[str]:
    """The person of the pose template: clothes over the body, skin for the neck and head."""
    person = place(load_pose(style.pose), WIDTH, HEIGHT)[0] if style.pose else None
    if person is None:
        return []
    at = dict(enumerate(person))
    nose, neck, r_sh, l_sh = at[0], at[1], at[2], at[5]
    shapes: list[str] = []
    if r_sh and l_sh and neck:
        hips = [p for p in (at[8], at[11]) if p]
        bottom = max([HEIGHT + 20, *(p[1] + 60 for p in hips)])
        spread = (l_sh[0] - r_sh[0]) * 0.1
        shapes.append(
            f'<path d="M{r_sh[0] - 20:.0f} {r_sh[1]:.0f}Q{neck[0]:.0f} {neck[1] - 30:.0f} '
            f"{l_sh[0] + 20:.0f} {l_sh[1]:.0f}L{l_sh[0] + 20 + spread:.0f} {bottom:.0f}"
            f'L{r_sh[0] - 20 - spread:.0f} {bottom:.0f}Z" fill="{look.wardrobe}"/>'
        )
    for shoulder, elbow, wrist in ((2, 3, 4), (5, 6, 7)):
        points = [p for p in (at[shoulder], at[elbow], at[wrist]) if p is not None]
        if len(points) >= 2:
            path = " ".join(f"{x:.0f},{y:.0f}" for x, y in points)
            shapes.append(
                f'<polyline points="{path}" fill="none" stroke="{look.wardrobe}" stroke-width="64" '
                'stroke-linecap="round" stroke-linejoin="round"/>'
            )
    eyes = [p for p in (at[14], at[15]) if p]
    if nose and neck:
        shapes.append(
            f'<line x1="{neck[0]:.0f}" y1="{neck[1]:.0f}" x2="{nose[0]:.0f}" y2="{nose[1]:.0f}" '
            f'stroke="{look.skin}" stroke-width="58" stroke-linecap="round"/>'
        )
        span = abs(eyes[0][0] - eyes[1][0]) if len(eyes) == 2 else 50.0
        rx, ry = max(span * 1.5, 60.0), max(span * 1.95, 80.0)
        cy = (sum(p[1] for p in eyes) / len(eyes) if eyes else nose[1]) + ry * 0.12
        rim = f' stroke="{look.light_colour}" stroke-width="6"' if look.light == "back" else ""
        shapes.append(
            f'<ellipse cx="{nose[0]:.0f}" cy="{cy:.0f}" rx="{rx:.0f}" ry="{ry:.0f}" fill="{look.skin}"{rim}/>'
        )
    # The pose itself, as the OpenPose ControlNet sees it (ControlNet's limb colours).
    for (a, b), colour in zip(LIMBS[:13], COLORS, strict=False):
        p, q = at[a - 1], at[b - 1]
        if p and q:
            shapes.append(
                f'<line x1="{p[0]:.0f}" y1="{p[1]:.0f}" x2="{q[0]:.0f}" y2="{q[1]:.0f}" '
                f'stroke="{_rgb(colour)}" stroke-width="7" stroke-linecap="round" opacity="0.9"/>'
            )
    shapes += [
        f'<circle cx="{p[0]:.0f}" cy="{p[1]:.0f}" r="7" fill="{_rgb(COLORS[i])}"/>'
        for i, p in enumerate(person[:14])
        if p
    ]
    return shapes


def render_card(style: Style) -> str:
    """The style's sample card as an SVG document (str, UTF-8 text; 512 x 768 user units shown at
    240 x 360 px). Raises ValueError for a style without `look`, PoseError for an unknown pose."""
    look = style.look
    if look is None:
        raise ValueError(f"{style.id}: no `look` to draw")
    cx, cy, r = LIGHT_SPOT[look.light]
    strength = 0.45 if look.light == "soft" else 0.75
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="240" height="360">',
        "<defs>",
        '<linearGradient id="backdrop" x1="0" y1="0" x2="0" y2="1">'
        f'<stop offset="0" stop-color="{look.backdrop[0]}"/>'
        f'<stop offset="1" stop-color="{look.backdrop[1]}"/></linearGradient>',
        f'<radialGradient id="light" cx="{cx}" cy="{cy}" r="{r}">'
        f'<stop offset="0" stop-color="{look.light_colour}" stop-opacity="{strength}"/>'
        f'<stop offset="1" stop-color="{look.light_colour}" stop-opacity="0"/></radialGradient>',
        "</defs>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="url(#backdrop)"/>',
        *_scene(look),
        *_figure(style, look),
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="url(#light)"/>',
        "</svg>",
    ]
    return "\n".join(body) + "\n"


def card_path(style: Style, directory: Path = STYLES_DIR) -> Path:
    return directory / PREVIEWS / f"{style.id}.svg"


def main() -> int:
    """Write every style's card to shared/styles/previews/<id>.svg; prints what it wrote."""
    for style in load_styles().values():
        path = card_path(style)
        path.parent.mkdir(exist_ok=True)
        path.write_text(render_card(style), encoding="utf-8")
        print(path.relative_to(STYLES_DIR.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
