#!/usr/bin/env python3
"""Scores the demo VLM's colour and shape words against the scene truth (issue 8).

The scoring half (score_text, aggregate, chance_baseline) is pure Python so /usr/bin/python3 and vlmcheck's
tests can import it; only evaluate_model() needs torch + transformers (imported inside it).

What is scored, per scene (text lower-cased, split into words; plurals and "gray" folded):
  - pairs: every "<colour> <shape>" adjacency (whitespace between, no punctuation), e.g. "red circle" (the title's "Red Circle" too), against the
    truth's (colour, shape) set -> pair_f1; exact = pairs equal the truth and the background is right.
  - shapes: every shape word anywhere (keywords included) -> shape_f1 against the truth's shape set.
  - colours: every colour word anywhere except those followed by "background" -> colour_f1 against the
    truth's shape colours (a background colour named as a shape colour is a false positive).
  - background: the colour right before "background" (first occurrence) -> background accuracy.
chance_baseline() scores each held-out scene against the reference answer of an unrelated random scene:
the accuracy of a model that writes perfect sentences but does not look at the image.

    python3 tools/eval_demo_vlm.py --model DIR [--seed 1000 --count 200]     # GPU machine (or CPU, slowly)
    /usr/bin/python3 tools/eval_demo_vlm.py --score outputs.json            # {"outputs": [{"text", "truth"}]}
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_scenes  # noqa: E402

_COLOUR_WORDS = set(demo_scenes.COLOURS)
_SHAPE_WORDS = set(demo_scenes.SHAPES)
_FOLD = {"gray": "grey"}


def _words(text):
    """[(word, joined)]: joined is True when only whitespace separates the word from the previous one
    (so "red circle" pairs up but the keyword list "green, star" does not)."""
    out = []
    low = text.lower()
    prev_end = None
    for m in re.finditer(r"[a-z]+", low):
        w = _FOLD.get(m.group(), m.group())
        if w.endswith("es") and w[:-2] in _SHAPE_WORDS:      # crosses
            w = w[:-2]
        elif w.endswith("s") and w[:-1] in _SHAPE_WORDS:     # circles, squares, stars
            w = w[:-1]
        joined = prev_end is not None and low[prev_end:m.start()].strip() == ""
        out.append((w, joined))
        prev_end = m.end()
    return out


def parse_text(text):
    """What a description claims: pairs, colours, shapes, background (None when not named)."""
    words = _words(text)
    pairs, colours, shapes = set(), set(), set()
    background = None
    for i, (w, _) in enumerate(words):
        nxt, nxt_joined = words[i + 1] if i + 1 < len(words) else (None, False)
        if w in _COLOUR_WORDS:
            if nxt == "background" and nxt_joined:
                if background is None:
                    background = w
            else:
                colours.add(w)
                if nxt in _SHAPE_WORDS and nxt_joined:
                    pairs.add((w, nxt))
        elif w in _SHAPE_WORDS:
            shapes.add(w)
    return {"pairs": pairs, "colours": colours, "shapes": shapes, "background": background}


def _f1(pred, truth):
    if not pred and not truth:
        return 1.0
    tp = len(pred & truth)
    if tp == 0:
        return 0.0
    p, r = tp / len(pred), tp / len(truth)
    return 2 * p * r / (p + r)


def score_text(text, truth):
    """Per-scene scores of one output text against a truth dict from demo_scenes.sample_truth()."""
    got = parse_text(text)
    t_pairs = {(s["colour"], s["shape"]) for s in truth["shapes"]}
    t_colours = {s["colour"] for s in truth["shapes"]}
    t_shapes = {s["shape"] for s in truth["shapes"]}
    bg_ok = got["background"] == truth["background"]["colour"]
    return {
        "pair_f1": _f1(got["pairs"], t_pairs),
        "colour_f1": _f1(got["colours"], t_colours),
        "shape_f1": _f1(got["shapes"], t_shapes),
        "background": 1.0 if bg_ok else 0.0,
        "exact": 1.0 if (got["pairs"] == t_pairs and bg_ok) else 0.0,
    }


def aggregate(scores):
    """Mean of each metric over a list of score_text() results."""
    if not scores:
        return {}
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}


def chance_baseline(truths, style="triage", seed=999983):
    """Scores of well-formed answers about unrelated random scenes (same generator, another seed)."""
    out = []
    for i, t in enumerate(truths):
        other = demo_scenes.sample_truth(seed, i)
        text = demo_scenes.triage_answer(other) if style == "triage" else demo_scenes.blind_answer(other)
        out.append(score_text(text, t))
    return aggregate(out)


def evaluate_model(model, processor, seed, count, batch=100, device=None, max_new_tokens=None):
    """Greedy outputs of a transformers Llava model on held-out scenes; returns (summary, per-scene records).

    Each style's prompts render to the same token length (one image, one fixed prompt), so a batch needs no
    padding and every row decodes exactly as it would alone.
    """
    import torch  # noqa: PLC0415 (torch only where the model runs)

    device = device or next(model.parameters()).device
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    scenes = [demo_scenes.scene(seed, i) for i in range(count)]
    records = [{"index": i, "truth": t, "outputs": {}} for i, (_, t) in enumerate(scenes)]
    summary = {}
    for style, prompt in demo_scenes.PROMPTS.items():
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        limit = max_new_tokens or (48 if style == "triage" else 160)
        scores = []
        for start in range(0, count, batch):
            chunk = scenes[start:start + batch]
            inputs = processor(images=[im for im, _ in chunk], text=[text] * len(chunk), return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
            with torch.no_grad():
                gen = model.generate(**inputs, do_sample=False, max_new_tokens=limit, eos_token_id=eos,
                                     pad_token_id=eos)
            new = gen[:, inputs["input_ids"].shape[1]:]
            for row, (_, truth) in enumerate(chunk):
                out = processor.tokenizer.decode(new[row], skip_special_tokens=True).strip()
                ids = new[row].tolist()
                ids = ids[:ids.index(eos) + 1] if eos in ids else ids
                rec = records[start + row]
                rec["outputs"][style] = out
                rec.setdefault("output_ids", {})[style] = ids  # greedy ids through <|im_end|>: parity oracle
                s = score_text(out, truth)
                rec.setdefault("scores", {})[style] = s
                scores.append(s)
        summary[style] = {"model": aggregate(scores),
                          "chance": chance_baseline([t for _, t in scenes], style),
                          "prompt_text": text, "max_new_tokens": limit}
    return summary, records


def evaluate_vlmcheck(binary, model, seed, count, workdir):
    """The same held-out evaluation through vlmcheck's own engine: each scene is rendered here (PIL), written as
    PNG and answered by `vlmcheck generate --json` with greedy decoding. Needs no torch."""
    import subprocess  # noqa: PLC0415

    os.makedirs(workdir, exist_ok=True)
    summary, records = {}, []
    scenes = [demo_scenes.scene(seed, i) for i in range(count)]
    paths = []
    for i, (im, truth) in enumerate(scenes):
        path = os.path.join(workdir, "scene_%04d.png" % i)
        im.save(path)
        paths.append(path)
        records.append({"index": i, "truth": truth, "outputs": {}, "scores": {}})
    for style, prompt in demo_scenes.PROMPTS.items():
        limit = 48 if style == "triage" else 160
        scores = []
        for i, path in enumerate(paths):
            out = subprocess.run([binary, "generate", "--model", model, "--image", path, "--prompt", prompt,
                                  "--temperature", "0", "--max-tokens", str(limit), "--json"],
                                 capture_output=True, text=True, check=True)
            text = json.loads(out.stdout)["text"].strip()
            records[i]["outputs"][style] = text
            records[i]["scores"][style] = score_text(text, scenes[i][1])
            scores.append(records[i]["scores"][style])
        summary[style] = {"model": aggregate(scores), "chance": chance_baseline([t for _, t in scenes], style),
                          "max_new_tokens": limit}
    return summary, records


def format_summary(summary):
    lines = []
    for style, both in summary.items():
        lines.append(f"[{style}]  metric      model   chance")
        for k in both["model"]:
            lines.append(f"  {k:18s} {both['model'][k]:6.3f}   {both['chance'][k]:6.3f}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a saved demo model folder (transformers evaluation)")
    ap.add_argument("--score", help="JSON {outputs: [{text, truth}]} to score without torch")
    ap.add_argument("--seed", type=int, default=1000, help="held-out scene seed (training uses another)")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json-out")
    ap.add_argument("--vlmcheck", help="evaluate through this vlmcheck binary instead of transformers (no torch)")
    ap.add_argument("--workdir", default="/tmp/vlmcheck-demo-eval", help="where --vlmcheck writes the scenes")
    args = ap.parse_args()
    if args.vlmcheck:
        if not args.model:
            ap.error("--vlmcheck needs --model")
        summary, records = evaluate_vlmcheck(args.vlmcheck, args.model, args.seed, args.count, args.workdir)
        print(format_summary(summary))
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump({"seed": args.seed, "count": args.count, "engine": "vlmcheck", "summary": summary,
                           "records": records}, f, indent=1)
        return
    if args.score:
        with open(args.score) as f:
            items = json.load(f)["outputs"]
        scores = [score_text(it["text"], it["truth"]) for it in items]
        result = {"model": aggregate(scores),
                  "chance": chance_baseline([it["truth"] for it in items])}
        print(json.dumps(result, indent=1))
        return
    if not args.model:
        ap.error("--model or --score is required")
    import torch  # noqa: PLC0415
    from transformers import AutoProcessor, LlavaForConditionalGeneration  # noqa: PLC0415

    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor = AutoProcessor.from_pretrained(args.model)
    model = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    model.to(device).eval()
    summary, records = evaluate_model(model, processor, args.seed, args.count)
    print(format_summary(summary))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"seed": args.seed, "count": args.count, "summary": summary, "records": records}, f,
                      indent=1)


if __name__ == "__main__":
    main()
