"""Item names and pictures, generated from (sale_id, item_id): no catalogue is stored."""

from __future__ import annotations

import functools
import hashlib

from notsale import pictures


def _words(text: str) -> tuple[str, ...]:
    """Comma-separated words, one tuple: keeps the long lists readable at a few per line."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


# Each colour word with the colour it paints the item in its picture.
COLOURS: dict[str, str] = {
    "Amber": "#ffbf00",
    "Aqua": "#3fb8af",
    "Arctic": "#c8e3ec",
    "Azure": "#3a7bd5",
    "Blush": "#de8d98",
    "Bronze": "#cd7f32",
    "Burgundy": "#800020",
    "Butter": "#f3e08b",
    "Charcoal": "#36454f",
    "Cherry": "#c2183c",
    "Cobalt": "#0047ab",
    "Coral": "#ff7f50",
    "Cream": "#f3e9d2",
    "Crimson": "#b0132e",
    "Dune": "#c2b280",
    "Ember": "#d2542c",
    "Emerald": "#2e8b57",
    "Fern": "#4f7942",
    "Forest": "#228b22",
    "Frost": "#dde8ee",
    "Ginger": "#b06500",
    "Graphite": "#474a51",
    "Harbour": "#4a6d7c",
    "Honey": "#e3a857",
    "Indigo": "#4b0082",
    "Ivory": "#fffff0",
    "Jade": "#00a86b",
    "Lagoon": "#00838f",
    "Lavender": "#b497d6",
    "Lemon": "#f5d94a",
    "Lilac": "#c8a2c8",
    "Midnight": "#191970",
    "Mint": "#98d8b0",
    "Moss": "#8a9a5b",
    "Mustard": "#d9a404",
    "Navy": "#1f2f5c",
    "Ochre": "#cc7722",
    "Olive": "#708238",
    "Onyx": "#353839",
    "Pearl": "#eae0c8",
    "Pine": "#01796f",
    "Plum": "#8e4585",
    "Rose": "#e8798e",
    "Ruby": "#9b111e",
    "Rust": "#b7410e",
    "Saffron": "#f4c430",
    "Sage": "#9caf88",
    "Sand": "#d8c3a5",
    "Scarlet": "#e0301e",
    "Sky": "#87ceeb",
    "Slate": "#5b6770",
    "Storm": "#4f5d6c",
    "Teal": "#008080",
    "Umber": "#635147",
    "Violet": "#7f4fc9",
}
COLOUR_NAMES = tuple(COLOURS)
MATERIALS = _words("""
    Acacia, Alpaca, Aluminium, Bamboo, Birch, Brass, Brushed Steel, Canvas, Cashmere,
    Cast Iron, Ceramic, Chrome, Copper, Corduroy, Cork, Cotton, Denim, Enamel, Felt, Flannel,
    Glass, Granite, Hemp, Jute, Leather, Linen, Maple, Marble, Merino, Mohair, Oak, Pewter,
    Porcelain, Rattan, Recycled, Silicone, Silk, Stoneware, Suede, Teak, Terracotta, Titanium,
    Tweed, Velvet, Walnut, Wicker, Wool, Zinc
""")
PRODUCTS = _words("""
    Apron, Backpack, Bath Towel, Beanie, Bookend, Bowl, Bread Bin, Candle Holder, Carafe,
    Chopping Board, Clock, Coaster Set, Cushion, Desk Lamp, Doormat, Espresso Cup,
    Field Notebook, Gloves, Headphones, Hip Flask, Jug, Kettle, Keyring, Lantern, Laptop Sleeve,
    Lunch Box, Mirror, Mug, Pen Holder, Pencil Case, Photo Frame, Picnic Blanket, Pillow,
    Planter, Rug, Salt & Pepper Mill, Scarf, Serving Tray, Side Table, Slippers, Soap Dish,
    Speaker, Stool, Sunglasses, Tea Towel, Teapot, Throw, Toiletry Bag, Tote Bag, Trinket Box,
    Umbrella, Vase, Wall Shelf, Wallet, Watch, Water Bottle, Wind Chime, Wine Rack
""")
# 55 x 48 x 58 = 153,120 names: 10,000 items drawn from them repeat about n^2/2N = 330,
# so a sale keeps ~9,670 distinct names, and two sales name the same item alike ~1 in 150,000.

# One sale's 10,000 items and then some: checkout, purchase and item reads all name the items
# of the current sale, so they stay cached; an ended sale's reads evict only the coldest.
NAME_CACHE_SIZE = 16_384


def _digest(sale_id: int, item_id: int) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and every worker must agree.
    data = f"{sale_id}:{item_id}".encode("ascii")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _parts(h: int) -> tuple[str, str, str]:
    """Colour, material and product from the low digits of h in mixed radix."""
    h, colour = divmod(h, len(COLOUR_NAMES))
    h, material = divmod(h, len(MATERIALS))
    return COLOUR_NAMES[colour], MATERIALS[material], PRODUCTS[h % len(PRODUCTS)]


@functools.lru_cache(maxsize=NAME_CACHE_SIZE)
def item_name(sale_id: int, item_id: int) -> str:
    """A product name such as "Midnight Wool Scarf", the same in every process."""
    return " ".join(_parts(_digest(sale_id, item_id)))


def image_url(sale_id: int, item_id: int) -> str:
    return f"/sales/{sale_id}/items/{item_id}/image.svg"


def item_svg(sale_id: int, item_id: int) -> str:
    """The item's picture: the object its name says, in its colour and material (pictures.py)."""
    h = _digest(sale_id, item_id)
    colour, material, product = _parts(h)
    return pictures.item_svg(h, colour, COLOURS[colour], material, product)
