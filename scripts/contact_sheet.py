"""A contact sheet of results: a few photos x a few gallery styles, at the engine's defaults.

    .venv/bin/python scripts/contact_sheet.py                  # docs/contact_sheet.jpg
    .venv/bin/python scripts/contact_sheet.py --size 256 --backbone vgg19 --photos chelsea,coffee

Made with whatever backbone is asked for (default: the trained offline fallback vgg16-hed) and
labelled with the one actually used, the size and the seconds each picture took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import StyleParams, stylize  # noqa: E402

PHOTOS = ["chelsea", "astronaut"]  # tests/data/photos (scikit-image, PD / CC0)
STYLES = ["mosaic", "starry_swirls", "ink_wash"]
CELL = 160
PAD = 6
TEXT = 16


def _fit(image: Image.Image, cell: int = CELL) -> Image.Image:
    image = image.copy()
    image.thumbnail((cell, cell), Image.Resampling.LANCZOS)
    framed = Image.new("RGB", (cell, cell), "white")
    framed.paste(image, ((cell - image.width) // 2, (cell - image.height) // 2))
    return framed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=160, help="long edge of each result (160)")
    ap.add_argument("--backbone", default="vgg16-hed", help="vgg16-hed, vgg19 or auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--styles", default=",".join(STYLES))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "contact_sheet.jpg")
    args = ap.parse_args()
    photos, styles = args.photos.split(","), args.styles.split(",")

    step = CELL + PAD
    width = PAD + step * (len(styles) + 1)
    sheet = Image.new("RGB", (width, 2 * TEXT + PAD + step * (len(photos) + 1)), "white")
    draw = ImageDraw.Draw(sheet)
    top = 2 * TEXT
    style_images = {}
    for j, name in enumerate(styles):
        style_images[name] = Image.open(next((ROOT / "styles").glob(f"{name}.*"))).convert("RGB")
        sheet.paste(_fit(style_images[name]), (PAD + step * (j + 1), top + PAD))
        draw.text((PAD + step * (j + 1), top + PAD + CELL - TEXT), name, fill="white")
    labels = set()
    for i, photo_name in enumerate(photos):
        photo = Image.open(ROOT / "tests" / "data" / "photos" / f"{photo_name}.jpg").convert("RGB")
        y = top + PAD + step * (i + 1)
        sheet.paste(_fit(photo), (PAD, y))
        for j, style_name in enumerate(styles):
            t = time.perf_counter()
            result = stylize(
                photo, [style_images[style_name]], StyleParams(size=args.size),
                device=args.device, backbone=args.backbone,
            )  # fmt: skip
            labels.add(result.backbone)
            seconds = time.perf_counter() - t
            print(f"{photo_name} x {style_name}: {seconds:.0f} s, {result.steps} steps", flush=True)
            sheet.paste(_fit(result.image), (PAD + step * (j + 1), y))
    caption = (
        f"styledrop, backbone {', '.join(sorted(labels))}, {args.size} px, default parameters "
        "(scripts/contact_sheet.py)"
    )
    draw.text((PAD, PAD), caption, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=88)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
