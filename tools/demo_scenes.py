#!/usr/bin/env python3
"""Seeded synthetic scenes for the demo VLM (issue 8): 1-3 coloured shapes on a varied background.

Pure Python + PIL (no numpy, no torch), so the training script on the GPU machine and /usr/bin/python3 here
render the same scenes from the same (seed, index). Every scene comes with its truth (shapes, colours,
centres, sizes, 3x3 positions, background) and with the two answer texts the model is trained on:
  - triage style (prompt "Describe this image briefly."): one sentence, e.g.
    "A red circle and a blue square on a yellow background."
  - blind style (check_models' catalogue prompt): Title / Description / Keywords blocks.
Shapes are listed left to right (by centre x), so every scene has exactly one target text.

Randomness comes only from random.Random(f"demo-scenes:{seed}:{index}") (string seeds are hashed with
SHA-512, stable across Python versions and platforms). Pixels can differ by an antialiasing step between
PIL versions; the truth cannot.

    /usr/bin/python3 tools/demo_scenes.py --seed 2 --count 4 --out /tmp/scenes   # writes PNG + truth JSON
"""
import argparse
import json
import math
import os
import random

from PIL import Image, ImageDraw

IMAGE_SIZE = 96          # the demo model's input size (CLIPImageProcessor resize/crop are identities here)
SUPERSAMPLE = 4          # shapes are drawn at 4x and box-filtered down: clean antialiased edges

# Named colours: the name is the truth; the RGB is jittered per scene so the model learns names, not values.
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 160, 60),
    "blue": (30, 80, 220),
    "purple": (130, 50, 170),
    "pink": (240, 130, 190),
    "brown": (120, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
}
SHAPE_COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
BACKGROUND_COLOURS = ["white", "black", "grey", "yellow", "blue", "green", "pink", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
BACKGROUND_STYLES = ["plain", "vertical gradient", "horizontal gradient", "diagonal gradient"]
MIN_RADIUS, MAX_RADIUS = 7, 16   # "radius" = the shape's nominal half-size in output pixels
EXTENT = 1.25                    # every shape fits inside a circle of EXTENT * radius

# check_models §2.4 prompts, verbatim.
TRIAGE_PROMPT = "Describe this image briefly."
BLIND_PROMPT = (
    "Create British-English catalogue metadata using only clearly visible facts. Omit uncertain details and "
    "unsupported identity, location, event, brand, species, period, or intent.\n"
    "\n"
    "Write:\n"
    "- a concrete 5-10-word title;\n"
    "- a 1-2-sentence factual description of the main subject, setting, action, lighting, and distinctive "
    "details;\n"
    "- 10-18 unique, comma-separated keywords.\n"
    "\n"
    "Return exactly these three sections and nothing else:\n"
    "Title:\n"
    "Description:\n"
    "Keywords:"
)
PROMPTS = {"triage": TRIAGE_PROMPT, "blind": BLIND_PROMPT}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
FIXED_KEYWORDS = ["geometric shapes", "flat colours", "simple composition", "minimal", "graphic",
                  "illustration"]


def _rng(seed, index):
    return random.Random(f"demo-scenes:{seed}:{index}")


def _jitter(rgb, rng, amount=14):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def position_word(cx, cy, size=IMAGE_SIZE):
    """3x3 grid position of a centre: 'top left', 'top', ..., 'centre', ..., 'bottom right'."""
    col = "left" if cx < size / 3 else ("right" if cx >= 2 * size / 3 else "")
    row = "top" if cy < size / 3 else ("bottom" if cy >= 2 * size / 3 else "")
    return (row + " " + col).strip() or "centre"


def sample_truth(seed, index):
    """The scene's truth only (no pixels): background + shapes sorted left to right."""
    rng = _rng(seed, index)
    count = rng.randint(1, 3)
    colours_pool = list(SHAPE_COLOURS)
    shapes = []
    pairs = set()
    attempts = 0
    while len(shapes) < count and attempts < 400:
        attempts += 1
        colour = rng.choice(colours_pool)
        shape = rng.choice(SHAPES)
        if (colour, shape) in pairs:
            continue
        radius = rng.randint(MIN_RADIUS, MAX_RADIUS)
        margin = EXTENT * radius + 2
        cx = rng.uniform(margin, IMAGE_SIZE - margin)
        cy = rng.uniform(margin, IMAGE_SIZE - margin)
        ok = all(math.hypot(cx - s["centre"][0], cy - s["centre"][1]) >= EXTENT * (radius + s["radius"]) + 3
                 and abs(cx - s["centre"][0]) >= 4 for s in shapes)
        if not ok:
            continue
        rotation = rng.uniform(-15.0, 15.0) if shape != "circle" else 0.0
        shapes.append({"shape": shape, "colour": colour, "radius": radius,
                       "centre": [round(cx, 2), round(cy, 2)], "rotation": round(rotation, 2)})
        pairs.add((colour, shape))
    shapes.sort(key=lambda s: s["centre"][0])
    used = {s["colour"] for s in shapes}
    background = rng.choice([c for c in BACKGROUND_COLOURS if c not in used])
    style = rng.choice(BACKGROUND_STYLES)
    # Per-scene colour jitter, drawn after the layout so the layout does not depend on it.
    bg_rgb = _jitter(COLOURS[background], rng, 10)
    bg_rgb2 = _jitter(COLOURS[background], rng, 10)
    if style != "plain":  # the gradient's far end: a lighter or darker shade of the same named colour
        delta = rng.choice([-1, 1]) * rng.randint(25, 45)
        bg_rgb2 = tuple(max(0, min(255, c + delta)) for c in bg_rgb2)
    for s in shapes:
        s["rgb"] = list(_jitter(COLOURS[s["colour"]], rng))
        s["position"] = position_word(*s["centre"])
    return {"seed": seed, "index": index, "size": IMAGE_SIZE,
            "background": {"colour": background, "style": style, "rgb": list(bg_rgb), "rgb2": list(bg_rgb2)},
            "shapes": shapes}


def _polygon(shape, cx, cy, r, rotation):
    """Vertices (in the supersampled canvas) of a non-circle shape of nominal half-size r."""
    def rot(points):
        a = math.radians(rotation)
        ca, sa = math.cos(a), math.sin(a)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]

    if shape == "square":
        h = 0.9 * r
        return rot([(-h, -h), (h, -h), (h, h), (-h, h)])
    if shape == "triangle":
        R = 1.2 * r  # equilateral, apex up; centroid at the centre
        return rot([(R * math.cos(math.radians(-90 + 120 * k)), R * math.sin(math.radians(-90 + 120 * k)))
                    for k in range(3)])
    if shape == "star":
        pts = []
        for k in range(10):
            rad = 1.22 * r if k % 2 == 0 else 0.5 * r
            a = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return rot(pts)
    if shape == "diamond":
        return rot([(0, -1.22 * r), (0.78 * r, 0), (0, 1.22 * r), (-0.78 * r, 0)])
    if shape == "cross":
        a, b = 1.0 * r, 0.36 * r
        return rot([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
                    (-a, -b), (-b, -b)])
    raise ValueError(f"unknown shape {shape!r}")


_RAMPS = {}


def _ramp(style, big):
    """Blend mask (L, 0 -> first colour, 255 -> second) of a gradient style; cached, it never changes."""
    key = (style, big)
    if key not in _RAMPS:
        vertical = Image.linear_gradient("L").resize((big, big), Image.BILINEAR)  # 0 at top, 255 at bottom
        if style == "vertical gradient":
            _RAMPS[key] = vertical
        elif style == "horizontal gradient":
            _RAMPS[key] = vertical.transpose(Image.ROTATE_90)
        elif style == "diagonal gradient":
            _RAMPS[key] = Image.blend(vertical, vertical.transpose(Image.ROTATE_90), 0.5)
        else:
            raise ValueError(f"unknown background style {style!r}")
    return _RAMPS[key]


def render(truth):
    """RGB PIL image of a truth dict (IMAGE_SIZE x IMAGE_SIZE)."""
    big = truth["size"] * SUPERSAMPLE
    bg = truth["background"]
    c1, c2 = tuple(bg["rgb"]), tuple(bg["rgb2"])
    if bg["style"] == "plain":
        canvas = Image.new("RGB", (big, big), c1)
    else:
        canvas = Image.composite(Image.new("RGB", (big, big), c2), Image.new("RGB", (big, big), c1),
                                 _ramp(bg["style"], big))
    draw = ImageDraw.Draw(canvas)
    for s in truth["shapes"]:
        cx, cy = s["centre"][0] * SUPERSAMPLE, s["centre"][1] * SUPERSAMPLE
        r = s["radius"] * SUPERSAMPLE
        fill = tuple(s["rgb"])
        if s["shape"] == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_polygon(s["shape"], cx, cy, r, s["rotation"]), fill=fill)
    return canvas.resize((truth["size"], truth["size"]), Image.BOX)


def scene(seed, index):
    """(PIL image, truth dict with the two answer texts) for scene `index` of `seed`."""
    truth = sample_truth(seed, index)
    truth["answers"] = {"triage": triage_answer(truth), "blind": blind_answer(truth)}
    return render(truth), truth


# ---- answer texts -------------------------------------------------------------------------------------------
def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _join(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _position_phrase(pos):
    if pos == "centre":
        return "in the centre"
    if pos in ("left", "right"):
        return "on the " + pos
    return "at the " + pos


def triage_answer(truth):
    """'A red circle and a blue square on a yellow background.'"""
    items = [f"{_article(s['colour'])} {s['colour']} {s['shape']}" for s in truth["shapes"]]
    bg = truth["background"]["colour"]
    text = f"{_join(items)} on {_article(bg)} {bg} background."
    return text[0].upper() + text[1:]


def blind_answer(truth):
    """Title / Description / Keywords, as check_models' blind prompt asks."""
    shapes = truth["shapes"]
    bg = truth["background"]["colour"]
    title = _join([f"{s['colour'].title()} {s['shape'].title()}" for s in shapes]) + \
        f" on {bg.title()} Background"
    where = _join([f"the {s['colour']} {s['shape']} is {_position_phrase(s['position'])}" for s in shapes])
    description = triage_answer(truth) + " " + where[0].upper() + where[1:] + "."
    keywords = []
    for word in [s["colour"] for s in shapes] + [s["shape"] for s in shapes] + [
            f"{bg} background", f"{COUNT_WORDS[len(shapes)]} {'shape' if len(shapes) == 1 else 'shapes'}"] + \
            FIXED_KEYWORDS:
        if word not in keywords:
            keywords.append(word)
    return f"Title: {title}\nDescription: {description}\nKeywords: {', '.join(keywords)}"


def corpus(seed=0, count=3000):
    """Prompts + answers of `count` scenes: the tokenizer's training text."""
    out = [TRIAGE_PROMPT, BLIND_PROMPT]
    for i in range(count):
        t = sample_truth(seed, i)
        out.append(triage_answer(t))
        out.append(blind_answer(t))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.start, args.start + args.count):
        img, truth = scene(args.seed, i)
        name = f"scene_s{args.seed}_{i:04d}"
        img.save(os.path.join(args.out, name + ".png"))
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(truth, f, indent=1)
        print(name, "|", truth["answers"]["triage"])


if __name__ == "__main__":
    main()
