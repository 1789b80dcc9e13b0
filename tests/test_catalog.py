"""Generated item names and pictures: deterministic, varied, valid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

from notsale.catalog import (
    COLOUR_NAMES,
    COLOURS,
    MATERIALS,
    PRODUCTS,
    image_url,
    item_name,
    item_svg,
)
from notsale.pictures import SHAPES, TEXTURES, TILES

SVG_NS = "{http://www.w3.org/2000/svg}"
REPO = Path(__file__).resolve().parents[1]
SALE = 498_745  # an hourly sale id, as current_sale() hands them out
SALE_SIZE = 10_000
PAIRS = [(1, 1), (7, 42), (SALE, 1), (SALE, SALE_SIZE), (SALE + 1, 9_999), (10**12, 3)]


def test_name_and_picture_are_deterministic_across_processes() -> None:
    # Another interpreter with another hash seed: what a second worker process would compute.
    code = (
        "import json; from notsale.catalog import item_name, item_svg; "
        f"print(json.dumps([[item_name(s, i), item_svg(s, i)] for s, i in {PAIRS!r}]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "4242"},
    )
    assert json.loads(other.stdout) == [[item_name(s, i), item_svg(s, i)] for s, i in PAIRS]


def test_same_inputs_give_the_same_name_and_picture() -> None:
    for s, i in PAIRS:
        assert item_name.__wrapped__(s, i) == item_name(s, i)  # uncached agrees with cached
        assert item_svg(s, i) == item_svg(s, i)


def test_word_lists_repeat_no_word_so_no_combination_is_lost() -> None:
    words = [*COLOUR_NAMES, *MATERIALS, *PRODUCTS]
    assert len(set(words)) == len(words)


def test_nearly_all_items_of_a_sale_have_distinct_names() -> None:
    # 153,120 combinations give ~9,670 distinct names per 10,000 items (sd ~18);
    # halving any one word list drops that to ~9,350, one word per list to at most 2,800.
    for sale in (1, SALE):
        names = {item_name(sale, i) for i in range(1, SALE_SIZE + 1)}
        assert len(names) >= 9_500


def test_names_look_like_products_not_item_numbers() -> None:
    for i in range(1, SALE_SIZE + 1):
        name = item_name(SALE, i)
        assert not re.search(r"(?i)\bitem\b|\d", name), name
        assert len(name.split()) >= 3 and name == name.strip()
        assert all(word[0].isupper() or word == "&" for word in name.split()), name


def test_names_differ_between_sales_for_most_items() -> None:
    # Same item in two sales: alike about once in 153,120, so 10 of 10,000 is generous.
    for a, b in ((1, 2), (SALE, SALE + 1)):
        same = sum(item_name(a, i) == item_name(b, i) for i in range(1, SALE_SIZE + 1))
        assert same <= 10


def test_svg_is_a_standalone_svg_document() -> None:
    root = ET.fromstring(item_svg(SALE, 7))
    assert root.tag == SVG_NS + "svg"
    assert root.get("viewBox") == "0 0 256 256"
    assert root.find(SVG_NS + "rect") is not None and root.find(SVG_NS + "g") is not None


def test_every_product_has_its_shape_and_every_material_its_texture() -> None:
    assert set(SHAPES) == set(PRODUCTS)
    assert set(TEXTURES) == set(MATERIALS)
    assert set(TEXTURES.values()) == set(TILES)
    # Hand-made shapes, not one shape recoloured: no two products are drawn alike.
    assert len(set(SHAPES.values())) == len(SHAPES)


def test_a_picture_draws_its_name_in_its_colour_and_material() -> None:
    for item in range(1, 200):
        name, svg = item_name(SALE, item), item_svg(SALE, item)
        colour = next(c for c in COLOUR_NAMES if name.startswith(c + " "))
        product = next(p for p in PRODUCTS if name.endswith(" " + p))
        material = name[len(colour) + 1 : -len(product) - 1]
        root = ET.fromstring(svg)
        assert SHAPES[product] in svg  # the product's own shape, drawn as made
        texture = root.find(f"{SVG_NS}defs/{SVG_NS}pattern/{SVG_NS}rect")
        assert texture is not None and texture.get("fill") == COLOURS[colour]
        assert TILES[TEXTURES[material]] in svg


def test_every_picture_of_a_whole_sale_is_well_formed_and_its_own() -> None:
    svgs = [item_svg(SALE, i) for i in range(1, SALE_SIZE + 1)]
    for svg in svgs:
        ET.fromstring(svg)
    assert len(set(svgs)) == SALE_SIZE


def test_svg_names_the_item_escaped_in_title_and_label() -> None:
    # "Salt & Pepper Mill" puts an ampersand in some names: the SVG must escape it.
    items = [i for i in range(1, SALE_SIZE + 1) if "&" in item_name(SALE, i)]
    assert items, "no name has an ampersand any more: this test needs one"
    name, svg = item_name(SALE, items[0]), item_svg(SALE, items[0])
    assert escape(name) in svg and "& " not in svg
    root = ET.fromstring(svg)
    assert root.findtext(SVG_NS + "title") == name
    label = root.find(SVG_NS + "text")
    assert label is not None and "".join(label.itertext()) == name


def test_svg_stays_under_two_kilobytes() -> None:  # ~1.2 KB, 1.4 KB at most
    assert max(len(item_svg(SALE, i).encode()) for i in range(1, SALE_SIZE + 1)) < 2048


def test_svg_differs_between_items_and_sales() -> None:
    svgs = {item_svg(s, i) for s in (1, 2) for i in range(1, 1_001)}
    assert len(svgs) == 2_000


def test_image_url_points_at_the_image_route() -> None:
    assert image_url(5, 6) == "/sales/5/items/6/image.svg"
