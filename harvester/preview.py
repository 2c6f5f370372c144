"""A look at the data before training on it: `harvester preview`.

preview/<class>.jpg is a contact sheet per class (a grid of thumbnails), and
preview/index.html shows a sample of every class, each picture linked to its Flickr page,
so a tag that brought the wrong pictures is seen at a glance. Works mid-harvest too: it
shows the photos kept so far.
"""

from __future__ import annotations

import html
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps
from sqlite_utils import Database

from harvester.config import Config
from harvester.files import replacing, write_atomically
from harvester.progress import ProgressSink

PREVIEW_DIR = "preview"
PAGE = "index.html"
CELL = 160  # px: each thumbnail's square on the contact sheet
COLUMNS = 8
MARGIN = 4
TITLE_HEIGHT = 28


def write_preview(db: Database, config: Config, per_class: int, sink: ProgressSink) -> list[Path]:
    """Write the contact sheets and the page; returns their paths."""
    folder = config.output_dir / PREVIEW_DIR
    sections = []
    written = []
    for spec in config.classes:
        kept = list(db.query(
            "SELECT photo_id, path, split, title, owner_name, owner, page_url, state "
            "FROM photos WHERE class = ? AND state IN ('resized', 'assigned') "
            "ORDER BY found_order", [spec.name]))
        # A random sample, the same each time: the first photos Flickr ranked are its best
        # matches, and would flatter the tag.
        sample = sorted(random.Random(f"{config.split.seed}:{spec.name}").sample(
            kept, min(per_class, len(kept))), key=lambda photo: photo["photo_id"])
        sink.start(f"preview {spec.name}", total=len(sample))
        sheet = folder / f"{spec.name}.jpg"
        contact_sheet(config.output_dir, spec.name, sample, sheet, sink)
        sink.finish(f"preview {spec.name}")
        written.append(sheet)
        sections.append((spec.name, len(kept), sample))
    page = folder / PAGE
    write_atomically(page, page_html(config, sections).encode())
    written.append(page)
    return written


def contact_sheet(out: Path, title: str, photos: list[dict[str, Any]], target: Path,
                  sink: ProgressSink) -> None:
    rows = max(1, -(-len(photos) // COLUMNS))
    sheet = Image.new("RGB", (COLUMNS * CELL + (COLUMNS + 1) * MARGIN,
                              TITLE_HEIGHT + rows * (CELL + MARGIN) + MARGIN), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN * 2, 6), f"{title}: {len(photos)} photos", fill=(240, 240, 240),
              font_size=16)
    for index, photo in enumerate(photos):
        with Image.open(out / photo["path"]) as image:
            thumbnail = ImageOps.contain(image.convert("RGB"), (CELL, CELL))
        column, row = index % COLUMNS, index // COLUMNS
        left = MARGIN + column * (CELL + MARGIN) + (CELL - thumbnail.width) // 2
        top = TITLE_HEIGHT + row * (CELL + MARGIN) + (CELL - thumbnail.height) // 2
        sheet.paste(thumbnail, (left, top))
        sink.advance(f"preview {title}")
    with replacing(target) as handle:
        sheet.save(handle, "JPEG", quality=85)


def page_html(config: Config, sections: list[tuple[str, int, list[dict[str, Any]]]]) -> str:
    def text(value: Any) -> str:
        return html.escape(str(value), quote=True)

    contents = " · ".join(
        f'<a href="#{text(name)}">{text(name)}</a> ({kept})' for name, kept, _ in sections)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>harvester preview: {text(config.output_dir.name)}</title>",
        "<style>",
        "body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}",
        ".grid{display:flex;flex-wrap:wrap;gap:6px}",
        ".grid a{display:flex;width:160px;height:160px;align-items:center;"
        "justify-content:center;background:#222}",
        ".grid img{max-width:160px;max-height:160px}",
        "</style></head><body>",
        f"<h1>Preview of {text(config.output_dir)}</h1>",
        f"<p>Classes: {contents}. A random sample of each class's photos; each links to its "
        "page on Flickr. Hover for its title and photographer.</p>",
    ]
    for name, kept, sample in sections:
        spec = config.class_spec(name)
        parts += [
            f'<section id="{text(name)}">',
            f"<h2>{text(name)}</h2>",
            f"<p>{len(sample)} of {kept} photos kept so far (wanted {spec.count}), tags "
            f"{text(', '.join(spec.tags))}. "
            f'<a href="{text(name)}.jpg">Contact sheet</a>.</p>',
            '<div class="grid">',
        ]
        for photo in sample:
            label = f"{photo['title'] or 'Untitled'} by {photo['owner_name'] or photo['owner']}"
            parts.append(
                f'<a href="{text(photo["page_url"])}" title="{text(label)}">'
                f'<img src="../{text(photo["path"])}" alt="{text(label)}"></a>')
        parts += ["</div>", "</section>"]
    parts += ["</body></html>"]
    return "\n".join(parts) + "\n"
