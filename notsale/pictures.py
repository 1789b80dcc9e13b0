"""Item pictures: the object the name says, drawn from a hand-made shape per product noun,
filled with the colour its colour word names and the texture of its material, varied per
item (tint, tilt, texture scale and angle) so that no two items of a sale look alike.

A picture is a standalone SVG of about 1.5 KB, generated from (sale_id, item_id) alone.
Shapes use the classes below: `o` an ink outline, `m` the material texture in the item's
colour, `c` the plain colour, `a` a paler accent of it, `w` white, `n` no fill. They are
drawn in a 256 by 196 box above the two-line label, thick enough to read at 64 px.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

# Part of each picture's ETag: raise it whenever item_svg draws differently.
PICTURE_VERSION = 2
PICTURE_SIZE = 256
LABEL_TOP = 196  # the picture above, the two-line name below
INK = "#222"

SHAPES: dict[str, str] = {
    "Apron": '<path class="o m" d="M96 40h64v36l30 6-8 98H74l-8-98 30-6z"/>'
    '<path class="o n" d="M96 40q32-30 64 0M66 86l-30 10M190 86l30 10"/>'
    '<rect class="o a" x="104" y="112" width="48" height="34" rx="4"/>',
    "Backpack": '<path class="o n" d="M104 50q24-34 48 0"/>'
    '<rect class="o m" x="72" y="48" width="112" height="136" rx="30"/>'
    '<rect class="o a" x="94" y="118" width="68" height="48" rx="10"/>'
    '<path class="o n" d="M94 132h68"/>',
    "Bath Towel": '<rect class="o m" x="50" y="116" width="156" height="60" rx="10"/>'
    '<rect class="o a" x="58" y="72" width="140" height="48" rx="10"/>'
    '<rect class="o m" x="66" y="34" width="124" height="42" rx="10"/>',
    "Beanie": '<path class="o m" d="M60 140q0-96 68-96t68 96z"/>'
    '<rect class="o a" x="52" y="134" width="152" height="36" rx="12"/>'
    '<circle class="o a" cx="128" cy="36" r="18"/>',
    "Bookend": '<path class="o m" d="M40 180V60h24v96h152v24z"/>'
    '<rect class="o a" x="70" y="78" width="24" height="78"/>'
    '<rect class="o c" x="96" y="66" width="22" height="90"/>'
    '<rect class="o a" x="120" y="90" width="26" height="66" transform="rotate(14 133 156)"/>',
    "Bowl": '<path class="o m" d="M40 96h176q-8 84-88 84T40 96z"/>'
    '<ellipse class="o a" cx="128" cy="96" rx="88" ry="16"/>',
    "Bread Bin": '<path class="o m" d="M44 180v-70q0-70 84-70t84 70v70z"/>'
    '<path class="o n" d="M70 110q0-44 58-44t58 44"/><rect class="o a" x="108" y="120" '
    'width="40" height="12" rx="6"/><path class="o n" d="M44 180h168"/>',
    "Candle Holder": '<rect class="o w" x="108" y="60" width="40" height="86" rx="4"/>'
    '<path class="o a" d="M128 24q16 18 0 34-16-16 0-34z"/>'
    '<path class="o m" d="M84 146h88l-14 16h-60zM112 162h32v12h-32zM80 174h96v10H80z"/>',
    "Carafe": '<path class="o m" d="M112 36h32v46l34 40v56H78v-56l34-40z"/>'
    '<path class="o n" d="M104 36h48"/><path class="o a" d="M86 130h84v40H86z"/>',
    "Chopping Board": '<rect class="o m" x="40" y="56" width="150" height="120" rx="18"/>'
    '<path class="o m" d="M190 98h20a18 18 0 0 1 0 36h-20z"/>'
    '<circle class="o w" cx="208" cy="116" r="6"/>',
    "Clock": '<circle class="o m" cx="128" cy="104" r="78"/>'
    '<circle class="o w" cx="128" cy="104" r="58"/>'
    '<path class="o n" d="M128 104V64M128 104l30 16M128 50v8M128 150v8M74 104h8M174 104h8"/>',
    "Coaster Set": '<ellipse class="o a" cx="128" cy="160" rx="80" ry="22"/>'
    '<ellipse class="o m" cx="128" cy="140" rx="80" ry="22"/>'
    '<ellipse class="o a" cx="128" cy="120" rx="80" ry="22"/>'
    '<ellipse class="o m" cx="128" cy="100" rx="80" ry="22"/>',
    "Cushion": '<path class="o m" d="M48 48q80 16 160 0-16 64 0 128-80-16-160 0 16-64 0-128z"/>'
    '<circle class="o a" cx="128" cy="112" r="10"/>',
    "Desk Lamp": '<path class="o m" d="M120 30l70 30-26 40-70-30z"/>'
    '<path class="o n" d="M140 84 96 150l40 20"/><rect class="o m" x="70" y="168" '
    'width="110" height="16" rx="8"/><circle class="o a" cx="96" cy="150" r="8"/>',
    "Doormat": '<rect class="o m" x="30" y="60" width="196" height="110" rx="8"/>'
    '<rect class="o n" x="46" y="76" width="164" height="78" rx="4"/>',
    "Espresso Cup": '<path class="o m" d="M86 84h84l-8 64H94z"/>'
    '<path class="o n" d="M168 96h10a14 14 0 0 1 0 28h-14"/>'
    '<ellipse class="o a" cx="128" cy="158" rx="70" ry="14"/>',
    "Field Notebook": '<rect class="o m" x="64" y="30" width="128" height="156" rx="8"/>'
    '<path class="o n" d="M84 30v156"/><rect class="o a" x="150" y="30" width="14" height="156"/>'
    '<rect class="o w" x="100" y="60" width="72" height="24" rx="3"/>',
    "Gloves": '<path class="o m" d="M52 180v-60q-16-30 0-44l18 24V50q0-12 12-12t12 12v50'
    'V40q0-12 12-12t12 12v60V46q0-12 12-12t12 12v94q0 16-10 40z"/>'
    '<rect class="o a" x="52" y="164" width="80" height="20" rx="4"/>'
    '<path class="o a" d="M160 184v-56q0-40 28-40t28 40v56z"/>',
    "Headphones": '<path class="o n" style="stroke-width:14" d="M62 128q0-92 66-92t66 92"/>'
    '<path class="o n" d="M62 128q0-92 66-92t66 92"/>'
    '<rect class="o m" x="40" y="110" width="40" height="70" rx="18"/>'
    '<rect class="o m" x="176" y="110" width="40" height="70" rx="18"/>',
    "Hip Flask": '<rect class="o m" x="68" y="56" width="120" height="128" rx="26"/>'
    '<rect class="o a" x="112" y="30" width="32" height="28" rx="4"/>'
    '<rect class="o w" x="90" y="90" width="76" height="50" rx="8"/>',
    "Jug": '<path class="o m" d="M86 40h76l-6 20q24 40 16 120H84q-8-80 16-120z"/>'
    '<path class="o n" d="M168 80q40 4 32 44t-34 36"/><path class="o n" d="M86 40l-18-10"/>',
    "Kettle": '<path class="o m" d="M70 180q-10-92 58-92t58 92z"/>'
    '<path class="o n" d="M86 100q42-70 84 0"/><path class="o m" d="M70 140 34 104l8-8 38 30z"/>'
    '<rect class="o a" x="118" y="74" width="20" height="14" rx="4"/>',
    "Keyring": '<circle class="o n" style="stroke-width:12" cx="88" cy="76" r="38"/>'
    '<circle class="o n" cx="88" cy="76" r="38"/>'
    '<path class="o m" d="M116 104l24 24 40-40 14 14-14 14 12 12-14 14-12-12-26 26-24-24z"/>',
    "Lantern": '<path class="o n" d="M104 40q24-30 48 0"/><rect class="o m" x="88" y="40" '
    'width="80" height="20" rx="4"/><rect class="o w" x="96" y="60" width="64" height="96"/>'
    '<path class="o a" d="M128 84q18 22 0 48-18-26 0-48z"/><path class="o n" d="M96 60v96M160'
    ' 60v96"/><rect class="o m" x="84" y="156" width="88" height="24" rx="4"/>',
    "Laptop Sleeve": '<rect class="o m" x="34" y="50" width="188" height="130" rx="14"/>'
    '<path class="o n" d="M34 74h188"/><rect class="o a" x="190" y="66" width="22" height="14"'
    ' rx="4"/>',
    "Lunch Box": '<path class="o n" d="M100 58q0-28 28-28t28 28"/>'
    '<rect class="o a" x="46" y="56" width="164" height="34" rx="10"/>'
    '<rect class="o m" x="52" y="90" width="152" height="90" rx="10"/>',
    "Mirror": '<ellipse class="o m" cx="128" cy="100" rx="70" ry="86"/>'
    '<ellipse class="o w" cx="128" cy="100" rx="52" ry="68"/>'
    '<path class="o n" d="M100 80l24-24M106 106l40-40"/>',
    "Mug": '<rect class="o m" x="70" y="50" width="96" height="130" rx="12"/>'
    '<path class="o n" style="stroke-width:16" d="M166 82h14a26 26 0 0 1 0 52h-14"/>'
    '<path class="o n" d="M166 82h14a26 26 0 0 1 0 52h-14"/>',
    "Pen Holder": '<path class="o c" d="M104 100 88 26l10-2 16 76z"/>'
    '<path class="o a" d="M132 100V20h12v80z"/><path class="o c" d="M150 100l24-70 10 4-22 66z"/>'
    '<rect class="o m" x="76" y="96" width="104" height="86" rx="8"/>',
    "Pencil Case": '<rect class="o m" x="30" y="80" width="196" height="72" rx="34"/>'
    '<path class="o n" d="M52 96h152"/><path class="o a" d="M186 96l8 22-14 4z"/>',
    "Photo Frame": '<rect class="o m" x="44" y="36" width="168" height="140" rx="6"/>'
    '<rect class="o w" x="66" y="58" width="124" height="96"/>'
    '<path class="o a" d="M66 154l40-50 26 30 18-20 40 40z"/><circle class="o a" cx="164" '
    'cy="82" r="10"/>',
    "Picnic Blanket": '<rect class="o m" x="36" y="44" width="184" height="136" rx="6"/>'
    '<path class="o a" d="M172 180l48-48v48z"/><path class="o n" d="M36 90h184M36 136h184'
    'M82 44v136M128 44v136M174 44v136"/>',
    "Pillow": '<path class="o m" d="M34 70q94-30 188 0-10 44 0 88-94 30-188 0 10-44 0-88z"/>'
    '<path class="o n" d="M60 114h136"/>',
    "Planter": '<path class="o c" style="fill:#3c8d40" d="M128 100q-60-10-56-70 48 16 56 70z'
    'M128 100q50-20 64-70-56 10-64 70z"/><path class="o m" d="M70 100h116l-16 84H86z"/>'
    '<rect class="o a" x="64" y="96" width="128" height="20" rx="4"/>',
    "Rug": '<rect class="o m" x="44" y="34" width="168" height="150" rx="4"/>'
    '<rect class="o n" x="64" y="54" width="128" height="110"/><path class="o n" d="M44 34v-10'
    "M72 34v-10M100 34v-10M128 34v-10M156 34v-10M184 34v-10M212 34v-10M44 184v10M72 184v10"
    'M100 184v10M128 184v10M156 184v10M184 184v10M212 184v10"/>',
    "Salt & Pepper Mill": '<path class="o m" d="M64 184v-24q-12-40 4-70-10-22 8-46h24q18 24 8'
    ' 46 16 30 4 70v24z"/><circle class="o a" cx="88" cy="30" r="8"/><path class="o a" '
    'd="M148 184v-24q-12-40 4-70-10-22 8-46h24q18 24 8 46 16 30 4 70v24z"/>'
    '<circle class="o m" cx="172" cy="30" r="8"/>',
    "Scarf": '<path class="o m" d="M60 40h50v110l30 30-36 10-44-30z"/>'
    '<path class="o m" d="M110 40h60q10 40-20 70l-40-30z"/>'
    '<path class="o n" d="M104 190l-4 10M116 186l-2 10M128 182v10"/>',
    "Serving Tray": '<path class="o m" d="M30 110h196l-16 44H46z"/>'
    '<path class="o n" d="M30 110q-14 0-14 14t14 14M226 110q14 0 14 14t-14 14"/>'
    '<ellipse class="o a" cx="128" cy="110" rx="98" ry="10"/>',
    "Side Table": '<ellipse class="o m" cx="128" cy="60" rx="96" ry="20"/>'
    '<path class="o n" style="stroke-width:10" d="M64 72l-16 110M192 72l16 110M96 76l-6 100'
    'M160 76l6 100"/><path class="o n" d="M60 140h136"/>',
    "Slippers": '<path class="o m" d="M50 180q-24-60 0-130 30-30 46 0 18 70 0 130z"/>'
    '<path class="o a" d="M48 70q24-40 50 0v30H48z"/>'
    '<path class="o m" d="M150 180q-24-60 0-130 30-30 46 0 18 70 0 130z"/>'
    '<path class="o a" d="M148 70q24-40 50 0v30h-50z"/>',
    "Soap Dish": '<path class="o m" d="M36 120h184q-10 50-92 50T36 120z"/>'
    '<rect class="o w" x="86" y="88" width="84" height="36" rx="16"/>',
    "Speaker": '<rect class="o m" x="68" y="28" width="120" height="156" rx="14"/>'
    '<circle class="o a" cx="128" cy="70" r="20"/><circle class="o a" cx="128" cy="132" r="36"/>'
    '<circle class="o n" cx="128" cy="132" r="12"/>',
    "Stool": '<ellipse class="o m" cx="128" cy="58" rx="70" ry="18"/>'
    '<path class="o n" style="stroke-width:10" d="M80 72 64 184M176 72l16 112M128 76v108"/>'
    '<path class="o n" d="M74 136h108"/>',
    "Sunglasses": '<path class="o n" d="M30 92h196M30 92l-8 24M226 92l8 24"/>'
    '<path class="o m" d="M44 94h72q2 56-36 56T44 94z"/>'
    '<path class="o m" d="M140 94h72q0 56-36 56t-36-56z"/>'
    '<path class="o n" d="M116 100q12-10 24 0"/>',
    "Tea Towel": '<path class="o n" d="M114 30q14-18 28 0"/>'
    '<rect class="o m" x="70" y="34" width="116" height="150" rx="4"/>'
    '<rect class="o a" x="70" y="150" width="116" height="14"/>'
    '<rect class="o a" x="70" y="54" width="116" height="14"/>',
    "Teapot": '<ellipse class="o m" cx="128" cy="126" rx="64" ry="54"/>'
    '<path class="o m" d="M70 120 30 90l-6 8 34 46z"/><path class="o n" d="M190 100q30 4 26 30'
    't-30 24"/><path class="o a" d="M96 76q32-24 64 0z"/>'
    '<circle class="o a" cx="128" cy="60" r="8"/>',
    "Throw": '<path class="o m" d="M50 40h156v110q-40 20-78 0t-78 0z"/>'
    '<path class="o n" d="M60 160v18M84 162v18M108 160v18M148 160v18M172 162v18M196 160v18"/>',
    "Toiletry Bag": '<path class="o m" d="M40 90q0-30 30-30h116q30 0 30 30v60q0 30-30 30H70'
    'q-30 0-30-30z"/><path class="o n" d="M40 90h176"/><rect class="o a" x="176" y="80" '
    'width="26" height="20" rx="4"/>',
    "Tote Bag": '<path class="o n" style="stroke-width:8" d="M92 84q0-60 36-60t36 60"/>'
    '<path class="o m" d="M56 80h144l-12 104H68z"/>',
    "Trinket Box": '<rect class="o m" x="52" y="100" width="152" height="80" rx="6"/>'
    '<path class="o a" d="M44 100q0-40 84-40t84 40z"/>'
    '<circle class="o c" cx="128" cy="120" r="10"/>',
    "Umbrella": '<path class="o m" d="M20 110q0-84 108-84t108 84q-18-16-36 0-18-16-36 0-18-16-36'
    ' 0-18-16-36 0-18-16-36 0-18-16-36 0z"/><path class="o n" style="stroke-width:8" '
    'd="M128 110v56q0 20-18 20t-18-20"/>',
    "Vase": '<path class="o m" d="M104 30h48v20q-6 16 12 40 30 40 0 94H92q-30-54 0-94 '
    '18-24 12-40z"/>'
    '<path class="o n" d="M96 30h64"/>',
    "Wall Shelf": '<rect class="o m" x="30" y="120" width="196" height="18" rx="3"/>'
    '<path class="o n" d="M56 138v30l24-30M200 138v30l-24-30"/><rect class="o a" x="54" y="70"'
    ' width="18" height="50"/><rect class="o c" x="74" y="80" width="16" height="40"/>'
    '<circle class="o a" cx="170" cy="98" r="22"/>',
    "Wallet": '<rect class="o m" x="40" y="60" width="176" height="116" rx="12"/>'
    '<path class="o a" d="M130 90h86v50h-86q-14 0-14-14v-22q0-14 14-14z"/>'
    '<circle class="o w" cx="146" cy="115" r="8"/>',
    "Watch": '<rect class="o m" x="104" y="20" width="48" height="172" rx="10"/>'
    '<circle class="o a" cx="128" cy="106" r="46"/><circle class="o w" cx="128" cy="106" r="34"/>'
    '<path class="o n" d="M128 106V82M128 106l16 10"/>',
    "Water Bottle": '<rect class="o a" x="104" y="22" width="48" height="26" rx="6"/>'
    '<rect class="o m" x="84" y="46" width="88" height="140" rx="26"/>'
    '<path class="o n" d="M84 84h88"/>',
    "Wind Chime": '<rect class="o m" x="54" y="26" width="148" height="16" rx="8"/>'
    '<path class="o n" d="M80 42v30M110 42v46M140 42v24M170 42v40M128 10v16"/>'
    '<rect class="o a" x="72" y="72" width="16" height="80" rx="8"/><rect class="o c" x="102" '
    'y="88" width="16" height="96" rx="8"/><rect class="o a" x="132" y="66" width="16" '
    'height="74" rx="8"/><rect class="o c" x="162" y="82" width="16" height="88" rx="8"/>',
    "Wine Rack": '<rect class="o m" x="40" y="36" width="176" height="148" rx="6"/>'
    + "".join(
        f'<circle class="o {"a" if (x + y) % 2 else "w"}" cx="{x}" cy="{y}" r="18"/>'
        for x in (78, 128, 178)
        for y in (74, 146)
    ),
}

# Texture of each material: how its surface is drawn over the item's colour.
TEXTURES: dict[str, str] = {
    # wood grain
    **dict.fromkeys(
        ("Acacia", "Bamboo", "Birch", "Maple", "Oak", "Teak", "Walnut", "Cork"), "grain"
    ),
    # metal sheen
    **dict.fromkeys(
        (
            "Aluminium",
            "Brass",
            "Brushed Steel",
            "Cast Iron",
            "Chrome",
            "Copper",
            "Pewter",
            "Titanium",
            "Zinc",
        ),
        "sheen",
    ),
    # fired, poured or cut: speckles
    **dict.fromkeys(
        ("Ceramic", "Porcelain", "Stoneware", "Terracotta", "Enamel", "Granite", "Glass"),
        "speckle",
    ),
    "Marble": "veins",
    # knits and wools: chevrons
    **dict.fromkeys(("Alpaca", "Cashmere", "Merino", "Mohair", "Wool", "Felt"), "knit"),
    # woven cloth: twill lines
    **dict.fromkeys(("Canvas", "Cotton", "Denim", "Hemp", "Linen", "Silk", "Velvet"), "twill"),
    **dict.fromkeys(("Corduroy", "Flannel", "Tweed"), "check"),
    **dict.fromkeys(("Jute", "Rattan", "Wicker"), "weave"),
    **dict.fromkeys(("Leather", "Suede"), "stitch"),
    **dict.fromkeys(("Recycled", "Silicone"), "dots"),
}

# Each texture's tile (drawn over the colour, in a `size`-unit pattern cell) as a path.
TILES: dict[str, str] = {
    "grain": '<path d="M0 4q6-4 12 0t12 0M0 14q6 3 12 0t12 0" fill="none" stroke="#000" '
    'stroke-opacity=".25" stroke-width="2"/>',
    "sheen": '<path d="M0 24 24 0" stroke="#fff" stroke-opacity=".45" stroke-width="5"/>',
    "speckle": '<circle cx="5" cy="6" r="2" fill="#000" fill-opacity=".25"/><circle cx="17" '
    'cy="16" r="1.5" fill="#fff" fill-opacity=".6"/>',
    "veins": '<path d="M0 20q8-14 14-4t10-10" fill="none" stroke="#fff" stroke-opacity=".7" '
    'stroke-width="1.5"/>',
    "knit": '<path d="M0 6l6 6 6-6 6 6 6-6" fill="none" stroke="#000" stroke-opacity=".25" '
    'stroke-width="2"/>',
    "twill": '<path d="M0 24 24 0M-6 6 6-6M18 30 30 18" stroke="#000" stroke-opacity=".2" '
    'stroke-width="2"/>',
    "check": '<path d="M0 6h24M6 0v24" stroke="#000" stroke-opacity=".25" stroke-width="4"/>',
    "weave": '<path d="M0 6h12M12 18h12M6 0v12M18 12v12" stroke="#000" stroke-opacity=".3" '
    'stroke-width="3"/>',
    "stitch": '<path d="M2 12h8M14 12h8" stroke="#fff" stroke-opacity=".6" stroke-width="2"/>',
    "dots": '<circle cx="6" cy="6" r="3" fill="#fff" fill-opacity=".5"/>',
}


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def paler(colour: str) -> str:
    """Half way to white: the accent of parts that are not the main body."""
    r, g, b = ((v + 255) // 2 for v in hex_rgb(colour))
    return f"#{r:02x}{g:02x}{b:02x}"


def item_svg(digest: int, colour_name: str, colour: str, material: str, product: str) -> str:
    """The picture of one item; `digest` varies it (tint, tilt, texture scale and angle)."""
    b = digest.to_bytes(8, "big")
    hue = b[0] * 360 // 256
    tilt = b[1] % 13 - 6
    scale = 0.75 + (b[2] % 6) / 10  # texture scale
    angle = b[3] % 4 * 45  # texture angle
    dx, dy = b[4] % 24, b[5] % 24  # texture offset
    size = PICTURE_SIZE
    name = escape(f"{colour_name} {material} {product}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" '
        f'height="{size}" role="img"><title>{name}</title>'
        f"<style>.o{{stroke:{INK};stroke-width:3;stroke-linejoin:round;stroke-linecap:round}}"
        f".m{{fill:url(#m)}}.c{{fill:{colour}}}.a{{fill:{paler(colour)}}}.w{{fill:#fff}}"
        ".n{fill:none}</style>"
        f'<defs><pattern id="m" width="24" height="24" patternUnits="userSpaceOnUse" '
        f'patternTransform="translate({dx} {dy}) rotate({angle}) scale({scale})">'
        f'<rect width="24" height="24" fill="{colour}"/>{TILES[TEXTURES[material]]}'
        "</pattern></defs>"
        f'<rect width="{size}" height="{size}" rx="24" fill="hsl({hue},40%,94%)"/>'
        f'<g transform="rotate({tilt} 128 104)">{SHAPES[product]}</g>'
        f'<rect y="{LABEL_TOP}" width="{size}" height="{size - LABEL_TOP}" fill="#fff" '
        f'fill-opacity="0.85"/>'
        f'<text x="{size // 2}" text-anchor="middle" font-family="sans-serif" fill="{INK}">'
        f'<tspan x="{size // 2}" y="{LABEL_TOP + 22}" font-size="14">'
        f"{escape(f'{colour_name} {material}')}</tspan> "
        f'<tspan x="{size // 2}" y="{LABEL_TOP + 44}" font-size="17" font-weight="bold">'
        f"{escape(product)}</tspan></text></svg>"
    )
