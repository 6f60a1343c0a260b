#!/usr/bin/env python3
"""Image-processor references on photo-sized inputs (tests/fixtures/vision/processors/).

The model fixtures (make_vision_fixtures.py) use tiny images, so they only exercise small resize ratios. This
script runs transformers' own image processors — the default backend and the other one — on two larger generated
photos (a 1600x1200 JPEG with EXIF Orientation 8 and a 1203x677 PNG), with realistic processor settings scaled so
the outputs stay small, and stores what they return:
    processors/images/photo_exif8.jpg, odd.png
    processors/<config>.json          the preprocessor config, class, backend, call kwargs, output shapes
    processors/<config>.safetensors   "<image>.pixel_values" f32 (+ image_grid_thw, pixel_attention_mask,
                                      num_crops) for each image
Run on the GPU machine (transformers 5.x + torchvision): python3 tools/make_processor_fixtures.py --out DIR
Images are opened as transformers' load_image does: ImageOps.exif_transpose(Image.open(p)).convert("RGB").
"""
import argparse
import json
import math
import os
import sys
import tempfile
import traceback

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from safetensors.torch import save_file
from transformers import AutoImageProcessor

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def make_images(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(7)
    h, w = 1200, 1600
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    # Sky-to-ground gradient, a sun, sinusoidal texture and mild noise: smooth regions and sharp edges.
    r = 60 + 150 * (y / h) + 20 * np.sin(x / 37.0)
    g = 110 + 80 * (1 - y / h) + 25 * np.sin((x + y) / 53.0)
    b = 200 - 120 * (y / h) + 15 * np.cos(x / 29.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse([1150, 120, 1450, 420], fill=(255, 230, 90))
    d.rectangle([200, 700, 700, 1100], fill=(150, 40, 40), outline=(20, 20, 20), width=9)
    d.polygon([(800, 1150), (1100, 650), (1400, 1150)], fill=(30, 120, 50))
    for i in range(0, 1600, 40):
        d.line([(i, 600), (i + 25, 640)], fill=(250, 250, 250), width=3)
    im = im.filter(ImageFilter.GaussianBlur(0.6))
    exif = Image.Exif()
    exif[0x0112] = 8
    im.save(os.path.join(folder, "photo_exif8.jpg"), quality=92, exif=exif.tobytes())
    # odd.png: odd sizes, a checkerboard (aliasing-prone under downscale) and a radial gradient.
    oh, ow = 677, 1203
    yy, xx = np.mgrid[0:oh, 0:ow]
    checker = (((yy // 7) + (xx // 7)) % 2) * 200 + 30
    rad = np.sqrt((yy - oh / 2) ** 2 + (xx - ow / 2) ** 2)
    arr = np.stack([checker, 255 * (rad / rad.max()), (xx * 255) // ow], -1)
    Image.fromarray(arr.astype(np.uint8)).save(os.path.join(folder, "odd.png"))


def load(path):
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


# name -> (image_processor_type, fields, use_fast (None = transformers' default), call kwargs, images)
CONFIGS = {
    "qwen2_vl_default": ("Qwen2VLImageProcessor",
                         dict(do_resize=True, resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                              image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True, min_pixels=3136,
                              max_pixels=25088, patch_size=14, temporal_patch_size=2, merge_size=2),
                         None, {}, ["photo_exif8.jpg", "odd.png"]),
    "qwen2_vl_pil": ("Qwen2VLImageProcessor", None, False, {}, ["photo_exif8.jpg"]),
    "clip_default": ("CLIPImageProcessor",
                     dict(do_resize=True, size={"shortest_edge": 112}, resample=3, do_center_crop=True,
                          crop_size={"height": 112, "width": 112}, do_rescale=True, rescale_factor=1 / 255,
                          do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True),
                     None, {}, ["photo_exif8.jpg", "odd.png"]),
    "siglip_default": ("SiglipImageProcessor",
                       dict(do_resize=True, size={"height": 112, "width": 112}, resample=3, do_rescale=True,
                            rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3),
                       None, {}, ["photo_exif8.jpg", "odd.png"]),
    "gemma3_pan_and_scan": ("Gemma3ImageProcessor",
                            dict(do_resize=True, size={"height": 64, "width": 64}, resample=2, do_rescale=True,
                                 rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3,
                                 image_std=[0.5] * 3, do_convert_rgb=True, do_pan_and_scan=True,
                                 pan_and_scan_min_crop_size=32, pan_and_scan_max_num_crops=4,
                                 pan_and_scan_min_ratio_to_activate=1.2),
                            None, dict(do_pan_and_scan=True), ["photo_exif8.jpg", "odd.png"]),
    "idefics3_default": ("Idefics3ImageProcessor",
                         dict(do_convert_rgb=True, do_resize=True, size={"longest_edge": 128}, resample=1,
                              do_image_splitting=True, max_image_size={"longest_edge": 64}, do_rescale=True,
                              rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                              do_pad=True),
                         None, {}, ["photo_exif8.jpg", "odd.png"]),
    "idefics3_torchvision": ("Idefics3ImageProcessor", None, True, {}, ["photo_exif8.jpg", "odd.png"]),
    "smolvlm_default": ("SmolVLMImageProcessor", None, None, {}, ["photo_exif8.jpg", "odd.png"]),
}


def backend_of(ip):
    names = [c.__name__ for c in type(ip).__mro__]
    mods = [c.__module__ for c in type(ip).__mro__]
    fast = any("Fast" in n or "Torchvision" in n for n in names) or any("torchvision" in m for m in mods)
    pil = any(n.endswith("Pil") or "PIL" in n for n in names) or any("_pil_" in m or m.endswith("_pil") for m in mods)
    return "pil" if pil or not fast else "torchvision", names[:4]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = args.out
    img_dir = os.path.join(out, "images")
    make_images(img_dir)
    print("transformers", transformers.__version__, "torch", torch.__version__)
    failures = []
    previous = {}
    for name, (cls, fields, use_fast, call_kwargs, images) in CONFIGS.items():
        try:
            if fields is None:  # same settings as the config this one varies
                base = {"qwen2_vl_pil": "qwen2_vl_default", "idefics3_torchvision": "idefics3_default",
                        "smolvlm_default": "idefics3_default"}[name]
                fields = previous[base]
            previous[name] = fields
            with tempfile.TemporaryDirectory() as tmp:
                cfg = dict(fields, image_processor_type=cls)
                with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
                    json.dump(cfg, f)
                kw = {} if use_fast is None else {"use_fast": use_fast}
                ip = AutoImageProcessor.from_pretrained(tmp, **kw)
            backend, mro = backend_of(ip)
            tensors, shapes = {}, {}
            for img_name in images:
                im = load(os.path.join(img_dir, img_name))
                res = ip(images=[im], return_tensors="pt", **call_kwargs)
                stem = os.path.splitext(img_name)[0]
                for k, v in res.items():
                    if torch.is_tensor(v):
                        t = v.float() if v.is_floating_point() else (v.to(torch.uint8) if v.dtype == torch.bool
                                                                    else v.to(torch.int64))
                        tensors["%s.%s" % (stem, k)] = t.contiguous()
                        shapes["%s.%s" % (stem, k)] = list(v.shape)
                    else:
                        shapes["%s.%s" % (stem, k)] = repr(v)[:200]
            save_file(tensors, os.path.join(out, name + ".safetensors"))
            meta = dict(name=name, preprocessor_config=dict(fields, image_processor_type=cls),
                        use_fast=use_fast, call_kwargs=call_kwargs, image_processor_class=mro[0],
                        image_processor_mro=mro, backend=backend, images=images, outputs=shapes,
                        transformers_version=transformers.__version__, torch_version=torch.__version__,
                        images_loaded_as="ImageOps.exif_transpose(Image.open(p)).convert('RGB')")
            with open(os.path.join(out, name + ".json"), "w") as f:
                json.dump(meta, f, indent=1)
            print(name, mro[0], backend, shapes)
        except Exception:
            failures.append(name)
            print("FAILED", name, traceback.format_exc())
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
