#!/usr/bin/env python3
"""Generates the text-decoder parity fixtures (tests/fixtures/text/<name>/) with HF transformers.

Run on the GPU machine (torch + transformers + tokenizers + peft there):
    python3 tools/make_text_fixtures.py --out /tmp/fixtures
Each fixture is a complete tiny model folder written by save_pretrained in float32 (config.json,
model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json, chat template) plus
reference.json: the prompt's token ids, the logits of every prompt position (the last one is what the
parity tests compare at 1e-3 relative), and 24 greedy tokens from model.generate(do_sample=False).

Random tiny models sit on near-ties and loops with default initialisation (engine_facts.md, "Behaviour of
the reference", item 9), so weights are re-drawn with larger scales and a seed is accepted only when every
greedy step's top-1/top-2 logit gap is >= MIN_GAP, the 24 tokens do not loop, and EOS is not produced.
Every TF32 switch is off (item 5); the GPU logits are also cross-checked against a CPU run.
LoRA fixtures (PEFT, PEFT+rsLoRA, and the same adapter converted to mlx-lm layout) sit beside their base.
"""
import argparse
import json
import math
import os
import shutil
import sys
import traceback

import torch

for setter in (
    lambda: setattr(torch.backends, "fp32_precision", "ieee"),
    lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "ieee"),
    lambda: setattr(torch.backends.cudnn, "fp32_precision", "ieee"),
    lambda: setattr(torch.backends.cudnn.conv, "fp32_precision", "ieee"),
):
    try:
        setter()
    except Exception as e:  # older torch: fall back to the legacy switches below
        print("fp32_precision switch unavailable:", e)
try:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
except Exception as e:
    print("legacy tf32 switch:", e)

import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from tokenizers import Tokenizer, Regex, models, normalizers, pre_tokenizers, decoders, trainers  # noqa: E402

N_GREEDY = 24
MIN_GAP = 1e-2
MAX_SEEDS = 60
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

SPECIALS = ["<pad>", "<|bos|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Describe the small red boat on the quiet lake.",
    "The picture shows a dog running across a green field under a blue sky.",
    "A woman is reading a book in a sunny kitchen with white walls.",
    "Two children play football near an old stone bridge at sunset.",
    "What colour is the car parked beside the yellow house?",
    "The chart compares the sales of apples, pears and oranges in 2024.",
    "Count the birds sitting on the wire above the street.",
    "There is a cat sleeping on a wooden chair by the window.",
    "The mountain is covered in snow and the river below is frozen.",
    "Please write a short caption for this image of a busy market.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2025.",
    "Is the man wearing a hat? Yes, he wears a black hat and a grey coat.",
]
PROMPTS = [
    "Describe the small red boat on the quiet lake in one sentence.",
    "Describe the small red boat.",
]
# Qwen2's pre-tokenizer (engine_facts item 6: AutoTokenizer rebuilds qwen2 tokenizers from this pipeline,
# so every fixture uses it and tokenizer.json stays the source of truth for all families).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok


def hf_tokenizer(tok):
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", chat_template=CHAT_TEMPLATE)


def prompt_ids(tok, hf_tok):
    for p in PROMPTS:
        text = hf_tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=False)
        ids = tok.encode(text, add_special_tokens=False).ids
        if 20 <= len(ids) <= 40:
            return p, text, ids
    raise RuntimeError("no prompt of 20..40 tokens: %d" % len(ids))


def family_configs(vocab, ids_of):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                  bos_token_id=ids_of["<|bos|>"], eos_token_id=ids_of["<|im_end|>"], pad_token_id=ids_of["<pad>"])
    c = {}
    c["llama"] = ("llama", dict(common, num_hidden_layers=3, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 32}), "llama3")
    c["mistral"] = ("mistral", dict(common, num_hidden_layers=3, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                    sliding_window=8, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                    "default")
    c["qwen2"] = ("qwen2", dict(common, num_hidden_layers=3, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), "default")
    c["qwen3"] = ("qwen3", dict(common, num_hidden_layers=3, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                attention_bias=False,
                                rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}),
                  "linear")
    c["gemma"] = ("gemma", dict(common, num_hidden_layers=3, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), "default")
    c["gemma2"] = ("gemma2", dict(common, num_hidden_layers=4, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                  hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24,
                                  sliding_window=8, attn_logit_softcapping=10.0, final_logit_softcapping=15.0,
                                  layer_types=["sliding_attention", "full_attention"] * 2,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), "default")
    c["gemma3_text"] = ("gemma3_text", dict(
        common, num_hidden_layers=4, rms_norm_eps=1e-6, tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24, sliding_window=8,
        attn_logit_softcapping=10.0, final_logit_softcapping=15.0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}}),
        None)
    c["phi3"] = ("phi3", dict(common, num_hidden_layers=3, rms_norm_eps=1e-5, tie_word_embeddings=False,
                              partial_rotary_factor=0.5, original_max_position_embeddings=256, sliding_window=None,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                               "partial_rotary_factor": 0.5}), "default")
    # RoPE scalings whose frequencies change with the sequence length: the 26-token prompt stays inside the
    # original length and greedy decoding crosses it, so the per-forward switch is exercised.
    c["llama_dynamic"] = ("llama", dict(common, num_hidden_layers=3, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                        max_position_embeddings=32,
                                        rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                         "rope_theta": 10000.0}), "dynamic")
    c["qwen2_yarn"] = ("qwen2", dict(common, num_hidden_layers=3, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                     rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                      "original_max_position_embeddings": 16}), "yarn")
    c["phi3_longrope"] = ("phi3", dict(common, num_hidden_layers=3, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                       partial_rotary_factor=0.5, original_max_position_embeddings=32,
                                       sliding_window=None,
                                       rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                        "partial_rotary_factor": 0.5,
                                                        "original_max_position_embeddings": 32,
                                                        "short_factor": [1.0, 1.2, 1.5, 2.0],
                                                        "long_factor": [1.0, 2.5, 6.0, 12.0]}), "longrope")
    return c


def redraw(model, model_type, gen):
    """Item 9: larger-scale weights so greedy decoding is far from ties."""
    gemma = model_type.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name):
                final = name.endswith("model.norm.weight") or name == "model.norm.weight"
                if gemma:  # stored w, applied as (1 + w)
                    base = 1.5 if final else 0.0
                else:
                    base = 2.5 if final else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:  # biases
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                # Gemma multiplies embeddings by sqrt(hidden) and ties the head: at std 0.6 the scaled input
                # swamps every layer's output and greedy decoding echoes its input token, so scale it back.
                std = 0.6 / math.sqrt(p.shape[1]) if gemma else 0.6
                p.copy_(std * torch.randn(p.shape, generator=gen))
            else:
                p.copy_((2.0 / math.sqrt(p.shape[1])) * torch.randn(p.shape, generator=gen))


def run_reference(model, ids, eos_id, device):
    model = model.to(device).eval()
    x = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].float().cpu()  # [n, vocab]
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=N_GREEDY, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=model.config.pad_token_id)
    tokens = out.sequences[0, len(ids):].tolist()
    gaps = []
    for s in out.scores:
        top = torch.topk(s[0].float(), 2).values
        gaps.append(float(top[0] - top[1]))
    return logits, tokens, gaps


def loops(tokens):
    if len(tokens) >= 16 and tokens[-8:] == tokens[-16:-8]:
        return True
    for period in (1, 2, 3, 4):
        tail = tokens[-4 * period:]
        if len(tail) == 4 * period and all(tail[i] == tail[i % period] for i in range(len(tail))):
            return True
    return max(tokens.count(t) for t in set(tokens)) > 6


def acceptable(tokens, gaps, eos_id):
    why = []
    if len(tokens) != N_GREEDY:
        why.append("stopped after %d tokens" % len(tokens))
    if eos_id in tokens:
        why.append("EOS generated")
    if min(gaps) < MIN_GAP:
        why.append("near-tie gap %.2e" % min(gaps))
    if loops(tokens):
        why.append("loops")
    return why


def write_reference(folder, extra, ids, logits, tokens, gaps):
    ref = dict(extra)
    ref.update({
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "device": DEVICE + (":" + torch.cuda.get_device_name(0) if DEVICE == "cuda" else ""),
        "dtype": "float32",
        "tf32": "off",
        "input_ids": ids,
        "logits_shape": list(logits.shape),
        "logits": [[round(float(v), 7) for v in row] for row in logits],
        "greedy_tokens": tokens,
        "greedy_step_gaps": [round(g, 6) for g in gaps],
        "greedy_min_gap": round(min(gaps), 6),
    })
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f)


def save_tokenizer(hf_tok, folder):
    hf_tok.save_pretrained(folder)


def make_family(name, model_type, kwargs, expect_rope, out_root, tok, hf_tok, prompt, text, ids, log):
    ids_of = {s: tok.token_to_id(s) for s in SPECIALS}
    eos_id = ids_of["<|im_end|>"]
    folder = os.path.join(out_root, name)
    for seed in range(MAX_SEEDS):
        cfg = AutoConfig.for_model(model_type, **kwargs)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
        gen = torch.Generator().manual_seed(1000 + seed)
        redraw(model, model_type, gen)
        if expect_rope is not None:
            rt = getattr(model.model.rotary_emb, "rope_type", None)
            if rt != expect_rope:
                raise RuntimeError("%s: rotary_emb.rope_type=%r, expected %r" % (name, rt, expect_rope))
        logits, tokens, gaps = run_reference(model, ids, eos_id, DEVICE)
        why = acceptable(tokens, gaps, eos_id)
        log("%s seed %d: tokens %s min gap %.3g %s" % (name, seed, tokens, min(gaps), "; ".join(why) or "OK"))
        if not why:
            break
    else:
        raise RuntimeError("%s: no acceptable seed in %d" % (name, MAX_SEEDS))
    if os.path.exists(folder):
        shutil.rmtree(folder)
    model.cpu().save_pretrained(folder, safe_serialization=True)
    save_tokenizer(hf_tok, folder)
    # The reference comes from the saved folder as a user would load it.
    reloaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    logits2, tokens2, gaps2 = run_reference(reloaded, ids, eos_id, DEVICE)
    cpu_logits, _, _ = run_reference(
        AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32), ids,
        eos_id, "cpu")
    diff_reload = float((logits2 - logits).abs().max())
    diff_cpu = float((logits2 - cpu_logits).abs().max())
    log("%s: reload max|diff| %.3g, cpu-vs-%s max|diff| %.3g, tokens equal %s" %
        (name, diff_reload, DEVICE, diff_cpu, tokens2 == tokens))
    if tokens2 != tokens:
        raise RuntimeError("%s: reloaded model generates differently" % name)
    write_reference(folder, {"name": name, "model_type": model_type, "seed": seed, "prompt": prompt,
                             "prompt_text": text, "reload_max_abs_diff": diff_reload,
                             "cpu_vs_device_max_abs_diff": diff_cpu}, ids, logits2, tokens2, gaps2)
    with open(os.path.join(folder, "config.json")) as f:
        log("%s config.json: %s" % (name, f.read()))
    return folder, logits2


def make_gemma3_legacy(new_folder, out_root, ids, new_logits, eos_id, prompt, text, log):
    """The same weights with the older Hub config layout: rope_theta + rope_scaling + rope_local_base_freq +
    sliding_window_pattern instead of rope_parameters per layer type and layer_types."""
    folder = os.path.join(out_root, "gemma3_text_legacy")
    if os.path.exists(folder):
        shutil.rmtree(folder)
    shutil.copytree(new_folder, folder)
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    layer_types = cfg.pop("layer_types")
    rp = cfg.pop("rope_parameters")
    assert layer_types == ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    cfg["sliding_window_pattern"] = 3  # layer i is sliding iff (i + 1) % 3 != 0
    cfg["rope_theta"] = rp["full_attention"]["rope_theta"]
    cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": rp["full_attention"]["factor"]}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    logits, tokens, gaps = run_reference(model, ids, eos_id, DEVICE)
    diff = float((logits - new_logits).abs().max())
    log("gemma3_text_legacy: max|diff| vs rope_parameters layout %.3g; layer_types after load %s" %
        (diff, getattr(model.config, "layer_types", None)))
    write_reference(folder, {"name": "gemma3_text_legacy", "model_type": "gemma3_text", "prompt": prompt,
                             "prompt_text": text, "vs_new_layout_max_abs_diff": diff}, ids, logits, tokens, gaps)


def make_lora(base_folder, name, out_root, ids, eos_id, use_rslora, with_mlx, log):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    folder = os.path.join(out_root, name)
    for seed in range(20):
        base = AutoModelForCausalLM.from_pretrained(base_folder, attn_implementation="eager", dtype=torch.float32)
        lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none",
                          use_rslora=use_rslora)
        pm = get_peft_model(base, lcfg)
        g = torch.Generator().manual_seed(500 + seed)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_A" in n or "lora_B" in n:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
        logits, tokens, gaps = run_reference(pm, ids, eos_id, DEVICE)
        why = acceptable(tokens, gaps, eos_id)
        log("%s seed %d: %s min gap %.3g %s" % (name, seed, tokens, min(gaps), "; ".join(why) or "OK"))
        if not why:
            break
    else:
        raise RuntimeError("%s: no acceptable seed" % name)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    pm.cpu().save_pretrained(folder)
    base_logits, _, _ = run_reference(
        AutoModelForCausalLM.from_pretrained(base_folder, attn_implementation="eager", dtype=torch.float32), ids,
        eos_id, DEVICE)
    write_reference(folder, {"name": name, "base": os.path.basename(base_folder), "format": "peft",
                             "use_rslora": use_rslora, "r": 4, "lora_alpha": 8,
                             "adapter_effect_max_abs": float((logits - base_logits).abs().max())},
                    ids, logits, tokens, gaps)
    if with_mlx:
        # The same adapter in mlx-lm layout: lora_a [in, r] = A^T, lora_b [r, out] = B^T, scale = alpha / r.
        mfolder = os.path.join(out_root, name.replace("peft", "mlx"))
        if os.path.exists(mfolder):
            shutil.rmtree(mfolder)
        os.makedirs(mfolder)
        tensors, keys = {}, set()
        for n, p in pm.named_parameters():
            if "lora_A" in n or "lora_B" in n:
                path = n.replace("base_model.model.", "", 1)
                mod = path.split(".lora_")[0]
                keys.add(mod.split(".")[-1])
                if "lora_A" in n:
                    tensors[mod + ".lora_a"] = p.detach().cpu().t().contiguous()
                else:
                    tensors[mod + ".lora_b"] = p.detach().cpu().t().contiguous()
        save_file(tensors, os.path.join(mfolder, "adapters.safetensors"), metadata={"format": "mlx"})
        scale = 8 / (math.sqrt(4) if use_rslora else 4)
        with open(os.path.join(mfolder, "adapter_config.json"), "w") as f:
            json.dump({"fine_tune_type": "lora", "num_layers": -1,
                       "lora_parameters": {"rank": 4, "scale": scale, "dropout": 0.0, "keys": sorted(keys)}}, f,
                      indent=2)
        write_reference(mfolder, {"name": os.path.basename(mfolder), "base": os.path.basename(base_folder),
                                  "format": "mlx-lm", "scale": scale}, ids, logits, tokens, gaps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    log_lines = []

    def log(s):
        print(s, flush=True)
        log_lines.append(s)

    log("transformers %s torch %s device %s" % (transformers.__version__, torch.__version__, DEVICE))
    tok = build_tokenizer()
    hf_tok = hf_tokenizer(tok)
    prompt, text, ids = prompt_ids(tok, hf_tok)
    vocab = tok.get_vocab_size()
    ids_of = {s: tok.token_to_id(s) for s in SPECIALS}
    eos_id = ids_of["<|im_end|>"]
    log("vocab %d, prompt %d tokens: %r -> %s" % (vocab, len(ids), text, ids))
    failures = []
    made = {}
    for name, (mt, kw, expect_rope) in family_configs(vocab, ids_of).items():
        if args.only and name not in args.only.split(","):
            continue
        try:
            made[name] = make_family(name, mt, kw, expect_rope, args.out, tok, hf_tok, prompt, text, ids, log)
        except Exception:
            failures.append(name)
            log("FAILED %s\n%s" % (name, traceback.format_exc()))
    if "gemma3_text" in made:
        try:
            make_gemma3_legacy(made["gemma3_text"][0], args.out, ids, made["gemma3_text"][1], eos_id, prompt, text,
                               log)
        except Exception:
            failures.append("gemma3_text_legacy")
            log("FAILED gemma3_text_legacy\n%s" % traceback.format_exc())
    for base, name, rs, mlx in (("llama", "llama_lora_peft", False, True), ("qwen2", "qwen2_lora_peft_rslora", True,
                                                                            True)):
        if base not in made:
            continue
        try:
            make_lora(made[base][0], name, args.out, ids, eos_id, rs, mlx, log)
        except Exception:
            failures.append(name)
            log("FAILED %s\n%s" % (name, traceback.format_exc()))
    with open(os.path.join(args.out, "generation_log.txt"), "w") as f:
        f.write("\n".join(log_lines) + "\n")
    log("failures: %s" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
