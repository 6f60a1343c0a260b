#!/usr/bin/env python3
"""Trains the demo VLM (issue 8): a ~4M-parameter LLaVA that names the shapes and colours in synthetic scenes.

Run on the GPU machine (python3 with torch + transformers 5.x + tokenizers; offline, no downloads):
    PYTHONUNBUFFERED=1 python3 tools/make_demo_vlm.py --out /tmp/demo_vlm
Writes into --out:
    vlm/                 LlavaForConditionalGeneration + LlavaProcessor (CLIPImageProcessor, byte-level BPE
                         tokenizer, ChatML template) saved by save_pretrained, weights in bf16
    scenes/*.png|json    a few held-out sample scenes and their truth
    eval_results.json    greedy outputs and scores on held-out scenes (seed --eval-seed) vs a chance baseline
    train_log.json       hyper-parameters, versions, device, loss curve, timings

Architecture (standard transformers classes only, so any LLaVA loader runs it):
  CLIP vision tower (96x96 px, patch 8 -> 144 patches + CLS; hidden 128, 4 layers) -> last layer, CLS dropped
  ("default" feature strategy) -> 2-layer GELU projector (128 -> 256 -> 256) -> Llama decoder (hidden 256,
  4 layers, 4 heads / 2 KV heads, SwiGLU 768, untied head) over a byte-level BPE vocabulary of <= 800.
Data: tools/demo_scenes.py renders scenes (seed --train-seed) and their two answer texts, one for each
check_models prompt (triage "Describe this image briefly." and the blind catalogue prompt). The loss covers
the answer tokens and the closing <|im_end|> only. Every step takes one triage and one blind micro-batch.
Training is seeded (data order, init); GPU kernels (SDPA backward) may still differ in the last bits.
The step count is --steps, lowered if the first steps show it would not fit --time-budget (the log says so);
pass the logged step count back with --steps to repeat a run.
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import demo_scenes  # noqa: E402
import eval_demo_vlm  # noqa: E402

SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<image>"]
# ChatML; a content list emits image items as "<image>" and text items as their text, in order.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PATCH = 8


def render_one(args):
    seed, index = args
    img, truth = demo_scenes.scene(seed, index)
    return img.tobytes(), truth["answers"]["triage"], truth["answers"]["blind"]


def render_many(seed, count, workers):
    t0 = time.time()
    with mp.get_context("fork").Pool(workers) as pool:
        rows = pool.map(render_one, [(seed, i) for i in range(count)], chunksize=256)
    print(f"rendered {count} scenes (seed {seed}) in {time.time() - t0:.1f}s with {workers} workers", flush=True)
    return rows


def build_tokenizer(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(demo_scenes.corpus(seed=12345, count=4000), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>",
                                   chat_template=CHAT_TEMPLATE)


def build_processor(hf_tok):
    from transformers import CLIPImageProcessor, LlavaProcessor

    size = demo_scenes.IMAGE_SIZE
    # Scenes are rendered at the input size, so resize (shortest edge) and centre crop are identities.
    ip = CLIPImageProcessor(do_resize=True, size={"shortest_edge": size}, do_center_crop=True,
                            crop_size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
                            do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    return LlavaProcessor(image_processor=ip, tokenizer=hf_tok, patch_size=PATCH,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          image_token="<image>", num_additional_image_tokens=1)


def build_model(hf_tok, args):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    size = demo_scenes.IMAGE_SIZE
    vision = CLIPVisionConfig(hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden,
                              num_hidden_layers=args.vision_layers, num_attention_heads=4, image_size=size,
                              patch_size=PATCH, num_channels=3, projection_dim=args.vision_hidden,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5)
    pad = hf_tok.convert_tokens_to_ids("<pad>")
    eos = hf_tok.convert_tokens_to_ids("<|im_end|>")
    text = LlamaConfig(vocab_size=len(hf_tok), hidden_size=args.text_hidden, intermediate_size=3 * args.text_hidden,
                       num_hidden_layers=args.text_layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    config = LlavaConfig(vision_config=vision, text_config=text, projector_hidden_act="gelu",
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(size // PATCH) ** 2, multimodal_projector_bias=True,
                         tie_word_embeddings=False)
    # Set after construction: the keyword is image_token_index in some versions, image_token_id in others,
    # and attribute_map routes this assignment to whichever is real.
    config.image_token_id = hf_tok.convert_tokens_to_ids("<image>")
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = None
    return model


def reload_processor(model_dir, hf_tok, prompt_ids, texts, probe, pv_ref):
    """AutoProcessor.from_pretrained(model_dir), checked against the tokenizer the model was trained with.

    transformers 5 may rebuild a tokenizer from the model type's own class instead of tokenizer.json (it does so
    for qwen2); for llava that class would be Llama's SentencePiece-style pipeline, which is not our byte-level
    BPE. If the reloaded ids differ, tokenizer_class is set to PreTrainedTokenizerFast (tokenizer.json as is) and
    the check repeats. Returns (processor, report dict).
    """
    from transformers import AutoProcessor

    def check(proc):
        bad = [t for t in texts if proc.tokenizer(t, add_special_tokens=False)["input_ids"] !=
               hf_tok(t, add_special_tokens=False)["input_ids"]]
        for style, prompt in demo_scenes.PROMPTS.items():
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            enc = proc(images=[probe], text=[text], return_tensors="pt")
            if enc["input_ids"][0].tolist() != prompt_ids[style]:
                bad.append(f"<{style} prompt>")
            diff = (enc["pixel_values"][0].float() - pv_ref).abs().max().item()
            if diff > 1e-4:
                bad.append(f"<pixels differ by {diff:.2e}>")
        return bad

    cfg_path = os.path.join(model_dir, "tokenizer_config.json")
    with open(cfg_path) as f:
        saved_class = json.load(f).get("tokenizer_class")
    proc = AutoProcessor.from_pretrained(model_dir)
    report = {"saved_tokenizer_class": saved_class, "loaded_tokenizer_class": type(proc.tokenizer).__name__,
              "image_processor_class": type(proc.image_processor).__name__, "mismatches": check(proc)}
    print(f"reload check: {report}", flush=True)
    if report["mismatches"]:
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        proc = AutoProcessor.from_pretrained(model_dir)
        report["patched_tokenizer_class"] = "PreTrainedTokenizerFast"
        report["loaded_tokenizer_class_after_patch"] = type(proc.tokenizer).__name__
        report["mismatches_after_patch"] = check(proc)
        print(f"reload check after patching tokenizer_class: {report}", flush=True)
    return proc, report


def cosine_lr(step, total, warmup, peak, floor=0.05):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0, help="init + data-order seed")
    ap.add_argument("--train-seed", type=int, default=1, help="scene seed of the training set")
    ap.add_argument("--eval-seed", type=int, default=1000, help="scene seed of the held-out set")
    ap.add_argument("--train-scenes", type=int, default=80000)
    ap.add_argument("--eval-scenes", type=int, default=300)
    ap.add_argument("--samples", type=int, default=6, help="held-out scenes saved as PNG + truth")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--time-budget", type=float, default=270.0, help="seconds of training at most")
    ap.add_argument("--batch", type=int, default=96, help="per style; each step has one batch of each")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--vocab", type=int, default=800)
    ap.add_argument("--vision-hidden", type=int, default=128)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--text-hidden", type=int, default=256)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--workers", type=int, default=max(1, min(16, os.cpu_count() or 1)))
    args = ap.parse_args()
    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    model_dir = os.path.join(args.out, "vlm")
    scenes_dir = os.path.join(args.out, "scenes")

    # Render first: the pool forks, which must happen before CUDA is initialised.
    rows = render_many(args.train_seed, args.train_scenes, args.workers)

    import torch
    import transformers
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device "
          f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}", flush=True)

    hf_tok = build_tokenizer(args.vocab)
    processor = build_processor(hf_tok)
    model = build_model(hf_tok, args).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(hf_tok)}, parameters {n_params:,} (bf16 {2 * n_params / 1e6:.2f} MB)", flush=True)
    for name, mod in (("vision_tower", model.model.vision_tower), ("projector", model.model.multi_modal_projector),
                      ("language_model", model.model.language_model), ("lm_head", model.lm_head)):
        print(f"  {name}: {sum(p.numel() for p in mod.parameters()):,}")
    image_id = model.config.image_token_id
    n_img = (demo_scenes.IMAGE_SIZE // PATCH) ** 2

    # Prompt ids exactly as the processor expands them (one scene image stands in; ids do not depend on it).
    from PIL import Image
    size = demo_scenes.IMAGE_SIZE
    probe = Image.frombytes("RGB", (size, size), rows[0][0])
    prompt_ids = {}
    for style, prompt in demo_scenes.PROMPTS.items():
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        enc = processor(images=[probe], text=[text], return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        assert ids.count(image_id) == n_img, f"{style}: {ids.count(image_id)} image tokens, expected {n_img}"
        prompt_ids[style] = ids
        print(f"{style} prompt: {len(ids)} tokens ({n_img} image); text {text!r}", flush=True)
        if style == "triage":
            pv_ref = enc["pixel_values"][0].float()
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    images = torch.frombuffer(bytearray(b"".join(r[0] for r in rows)), dtype=torch.uint8)
    images = images.view(len(rows), size, size, 3).to(device)

    def pixels(idx):  # [b, 3, H, W] f32, the processor's rescale + normalise
        x = images[idx].permute(0, 3, 1, 2).float() * (1 / 255)
        return (x - mean) / std

    diff = (pixels(torch.tensor([0], device=device))[0].cpu() - pv_ref).abs().max().item()
    print(f"own pixel pipeline vs processor: max |diff| {diff:.2e}", flush=True)
    if diff > 1e-4:  # not fatal: evaluation goes through the processor, so a gap shows up in the scores
        print("WARNING: training pixels differ from the processor's", flush=True)

    eos = hf_tok.convert_tokens_to_ids("<|im_end|>")
    pad = hf_tok.convert_tokens_to_ids("<pad>")
    seqs = {}
    for k, style in enumerate(("triage", "blind")):
        answers = hf_tok([r[1 + k] for r in rows], add_special_tokens=False)["input_ids"]
        p = prompt_ids[style]
        longest = max(len(a) for a in answers) + 1
        ids = torch.full((len(rows), len(p) + longest), pad, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        lengths = torch.empty(len(rows), dtype=torch.long)
        ids[:, :len(p)] = torch.tensor(p)
        for i, a in enumerate(answers):
            a = a + [eos]
            ids[i, len(p):len(p) + len(a)] = torch.tensor(a)
            labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
            lengths[i] = len(p) + len(a)
        seqs[style] = (ids.to(device), labels.to(device), lengths)  # lengths stay on the CPU: no sync
        print(f"{style}: answers up to {longest} tokens; sample: {rows[0][1 + k]!r}", flush=True)
    sample_answers = [r[k] for r in rows[:50] for k in (1, 2)]
    del rows

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05,
                            fused=(device == "cuda"))
    gen = torch.Generator().manual_seed(args.seed)
    total = args.steps
    log = []
    model.train()
    t_train = time.time()
    step = 0
    while step < total:
        if step in (10, 60):  # fit the step count into the time budget, once, early (still in the warm-up)
            if device == "cuda":
                torch.cuda.synchronize()
            if step == 10:
                t_10 = time.time()
            else:
                per_step = (time.time() - t_10) / 50
                fit = int(args.time_budget / per_step)
                if fit < total:
                    print(f"{per_step * 1e3:.1f} ms/step: {total} steps would overrun --time-budget; "
                          f"training {fit} steps", flush=True)
                    total = max(fit, args.warmup + 1)
                else:
                    print(f"{per_step * 1e3:.1f} ms/step: {total} steps fit the budget", flush=True)
        lr = cosine_lr(step, total, args.warmup, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = {}
        opt.zero_grad(set_to_none=True)
        for style in ("triage", "blind"):
            idx_cpu = torch.randint(0, images.shape[0], (args.batch,), generator=gen)
            idx = idx_cpu.to(device)
            ids, labels, lengths = seqs[style]
            n = int(lengths[idx_cpu].max())
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=(device == "cuda")):
                out = model(input_ids=ids[idx, :n], pixel_values=pixels(idx), labels=labels[idx, :n])
            (out.loss / 2).backward()
            losses[style] = out.loss.item() if step % 50 == 0 else None
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if losses["triage"] is not None:
            rec = {"step": step, "lr": lr, "elapsed_s": round(time.time() - t_train, 1), **losses}
            log.append(rec)
            if step % 250 == 1 or step == total:
                print(f"step {step}/{total} lr {lr:.2e} triage {losses['triage']:.4f} blind {losses['blind']:.4f} "
                      f"({rec['elapsed_s']}s)", flush=True)
    train_s = time.time() - t_train
    print(f"trained {total} steps in {train_s:.1f}s", flush=True)

    # Save in bf16 and evaluate what was saved, reloaded from disk like any user would.
    model.eval()
    model.to(torch.bfloat16)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    files = sorted(os.listdir(model_dir))
    total_bytes = sum(os.path.getsize(os.path.join(model_dir, f)) for f in files)
    print(f"saved {model_dir}: {files}, {total_bytes / 1e6:.2f} MB", flush=True)
    del model, opt, images, seqs
    torch.cuda.empty_cache() if device == "cuda" else None

    texts = [demo_scenes.TRIAGE_PROMPT, demo_scenes.BLIND_PROMPT] + sample_answers
    processor, reload_report = reload_processor(model_dir, hf_tok, prompt_ids, texts, probe, pv_ref)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    summary, records = eval_demo_vlm.evaluate_model(model, processor, args.eval_seed, args.eval_scenes)
    print(f"held-out evaluation: {args.eval_scenes} scenes of seed {args.eval_seed}, greedy, f32 from bf16 weights")
    print(eval_demo_vlm.format_summary(summary), flush=True)

    os.makedirs(scenes_dir, exist_ok=True)
    for rec in records[:args.samples]:
        img, truth = demo_scenes.scene(args.eval_seed, rec["index"])
        name = f"scene_{rec['index']:02d}"
        img.save(os.path.join(scenes_dir, name + ".png"))
        with open(os.path.join(scenes_dir, name + ".json"), "w") as f:
            json.dump(truth, f, indent=1)
        print(f"--- {name}.png  truth: {truth['answers']['triage']}")
        for style in ("triage", "blind"):
            print(f"[{style}] {rec['outputs'][style]}")
    with open(os.path.join(args.out, "eval_results.json"), "w") as f:
        json.dump({"eval_seed": args.eval_seed, "count": args.eval_scenes, "dtype": "float32 (from bf16 weights)",
                   "summary": summary, "records": records}, f, indent=1)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"args": vars(args), "steps": total, "train_seconds": round(train_s, 1),
                   "total_seconds": round(time.time() - t_start, 1), "parameters": n_params,
                   "checkpoint_bytes": total_bytes, "reload_check": reload_report, "torch": torch.__version__,
                   "transformers": transformers.__version__,
                   "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "loss": log}, f, indent=1)
    print(f"done in {time.time() - t_start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
