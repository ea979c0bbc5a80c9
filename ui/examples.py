"""Example images the app draws itself, with a question each, for one-click tries.

Drawn with Pillow into a cache folder the first time they are needed: a bar chart, a
receipt-like document and a scene of shapes with text. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

EXAMPLES = (
    ("bar_chart.png", "Which month had the highest sales, and by how much did it beat March?"),
    ("receipt.png", "What is the total on this receipt, and which item cost the most?"),
    ("shapes.png", "How many shapes are there, and what does the sign say?"),
)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow builds without FreeType take no size
        return ImageFont.load_default()


def _bar_chart(path: Path) -> None:
    image = Image.new("RGB", (640, 420), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 12), "Monthly sales (units)", fill="black", font=_font(22))
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun")
    values = (120, 95, 140, 180, 160, 110)
    base, scale = 370, 1.6
    draw.line((50, base, 620, base), fill="black", width=2)
    for i, (month, value) in enumerate(zip(months, values, strict=True)):
        left = 70 + i * 92
        draw.rectangle((left, base - value * scale, left + 60, base), fill=(66, 110, 200))
        draw.text((left + 14, base + 8), month, fill="black", font=_font(16))
        draw.text((left + 14, base - value * scale - 22), str(value), fill="black",
                  font=_font(16))
    image.save(path)


def _receipt(path: Path) -> None:
    image = Image.new("RGB", (420, 560), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    font, big = _font(18), _font(24)
    draw.text((120, 20), "CORNER CAFE", fill="black", font=big)
    draw.text((110, 55), "12 Harbour Street", fill="black", font=font)
    lines = (("Cappuccino", "3.80"), ("Croissant", "2.50"), ("Club sandwich", "8.90"),
             ("Orange juice", "4.20"), ("Brownie", "3.10"))
    y = 110
    for name, price in lines:
        draw.text((30, y), name, fill="black", font=font)
        draw.text((330, y), price, fill="black", font=font)
        y += 36
    draw.line((30, y + 5, 390, y + 5), fill="black", width=2)
    draw.text((30, y + 20), "TOTAL", fill="black", font=big)
    draw.text((310, y + 20), "22.50", fill="black", font=big)
    draw.text((90, y + 80), "Thank you for your visit!", fill="black", font=font)
    image.save(path)


def _shapes(path: Path) -> None:
    image = Image.new("RGB", (640, 420), (205, 230, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 300, 640, 420), fill=(120, 180, 90))
    draw.ellipse((40, 40, 160, 160), fill=(240, 200, 40))
    draw.rectangle((220, 180, 340, 300), fill=(200, 50, 50))
    draw.polygon(((420, 300), (500, 160), (580, 300)), fill=(60, 90, 200))
    draw.rectangle((250, 60, 470, 130), fill="white", outline="black", width=3)
    draw.text((275, 80), "OPEN 9-5", fill="black", font=_font(30))
    image.save(path)


_DRAW = {"bar_chart.png": _bar_chart, "receipt.png": _receipt, "shapes.png": _shapes}


def example_inputs(folder: Path) -> list[dict]:
    """MultimodalTextbox values for the examples, drawing the images into `folder` if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    values = []
    for name, question in EXAMPLES:
        path = folder / name
        if not path.exists():
            _DRAW[name](path)
        values.append({"text": question, "files": [str(path)]})
    return values
