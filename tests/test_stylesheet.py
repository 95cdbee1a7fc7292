"""The stylesheet's colours meet WCAG AA, in light and dark mode, and templates stay style-free."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import usage_limits

APP = Path(usage_limits.__file__).resolve().parent
CSS = (APP / "static" / "usage_limits" / "usage_limits.css").read_text()
TOKEN = re.compile(r"--ul-([a-z-]+):\s*(#[0-9a-fA-F]{6})\s*;")


def tokens(block: str) -> dict[str, str]:
    return dict(TOKEN.findall(block))


LIGHT = tokens(CSS.split("@media (prefers-color-scheme: dark)")[0])
DARK = {**LIGHT, **tokens(CSS.split("@media (prefers-color-scheme: dark)")[1].split("\n}\n")[0])}


def luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# (foreground, background, minimum): 4.5 for text, 3 for bars and lines (WCAG 1.4.3, 1.4.11)
PAIRS = [
    ("text", "surface", 4.5),
    ("text", "page-bg", 4.5),
    ("muted", "surface", 4.5),
    ("muted", "page-bg", 4.5),
    ("ok", "surface", 4.5),  # the level words ("Nearing limit") are coloured text
    ("amber", "surface", 4.5),
    ("red", "surface", 4.5),
    ("accent", "surface", 4.5),
    ("on-accent", "accent", 4.5),
    ("text", "amber-bg", 4.5),
    ("text", "red-bg", 4.5),
    ("ok", "track", 3.0),
    ("amber", "track", 3.0),
    ("red", "track", 3.0),
    ("limit-line", "surface", 3.0),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("foreground", "background", "minimum"), PAIRS)
def test_colour_pairs_meet_wcag_aa(
    scheme: str, foreground: str, background: str, minimum: float
) -> None:
    palette = LIGHT if scheme == "light" else DARK
    assert contrast(palette[foreground], palette[background]) >= minimum


def test_dark_mode_redefines_every_colour() -> None:
    assert set(tokens(CSS.split("@media (prefers-color-scheme: dark)")[1])) >= {
        name for name, value in LIGHT.items() if value.startswith("#")
    }


def test_the_levels_differ_from_each_other() -> None:
    for palette in (LIGHT, DARK):
        assert len({palette["ok"], palette["amber"], palette["red"]}) == 3


def test_templates_have_no_inline_styles() -> None:
    for template in (APP / "templates").rglob("*.html"):
        assert "style=" not in template.read_text(), template
