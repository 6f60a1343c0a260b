#!/usr/bin/env python3
"""HF transformers decode/prefill speed on the GPU for the shapes `vlmcheck bench --device cuda` measures.

The peer number for docs/PERFORMANCE.md: the same card, the same call, transformers' eager attention in
bf16 with random weights of the real shape (the language model of each VLM: decode and prefill speed do
not depend on the vision tower). Weights are drawn on the GPU by transformers' own init (no download: the configs are written
out below from the models' config.json files). Decode: a 128-token prompt, then N single-token forwards with
the KV cache (no sampling), timed with CUDA events after warm-up; prefill: one forward of P tokens.

Usage (GPU machine): python3 tools/cuda/hf_decode_baseline.py [--shapes qwen2.5-vl-3b,...] [--decode 64]
Prints one JSON line per shape and a markdown table.
"""
import argparse
import json
import time

import torch
import transformers

# Text-model sizes from each model's config.json (text_config where nested).
SHAPES = {
    "qwen2.5-vl-3b": dict(kind="qwen2", hidden_size=2048, num_hidden_layers=36, num_attention_heads=16,
                          num_key_value_heads=2, intermediate_size=11008, vocab_size=151936,
                          tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen2.5-vl-7b": dict(kind="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
                          tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "smolvlm-256m": dict(kind="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, vocab_size=49280,
                         tie_word_embeddings=False, rope_theta=100000.0, rms_norm_eps=1e-5),
    "gemma-3-4b": dict(kind="gemma3", hidden_size=2560, num_hidden_layers=34, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=256, intermediate_size=10240, vocab_size=262208,
                       sliding_window=1024, query_pre_attn_scalar=256, rms_norm_eps=1e-6),
}


def build(name):
    s = dict(SHAPES[name])
    kind = s.pop("kind")
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**s)
        cls = transformers.Qwen2ForCausalLM
    elif kind == "llama":
        cfg = transformers.LlamaConfig(**s)
        cls = transformers.LlamaForCausalLM
    else:
        cfg = transformers.Gemma3TextConfig(**s)
        cls = transformers.Gemma3ForCausalLM
    cfg._attn_implementation = "eager"
    # Built directly on the GPU in bf16: transformers' own init draws the random weights there (and
    # computes the rotary buffers), which takes seconds even for 7B.
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.eval()
    return model, cfg


def weight_bytes(model):
    seen = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


@torch.no_grad()
def measure(name, prompt, decode, prefill):
    model, cfg = build(name)
    vocab = cfg.vocab_size
    ids = torch.randint(0, vocab, (1, prompt), device="cuda")
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    nxt = out.logits[:, -1:].argmax(-1)
    for _ in range(4):  # warm-up steps
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(decode):
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    decode_tps = decode / dt
    del past, out
    long_ids = torch.randint(0, vocab, (1, prefill), device="cuda")
    model(input_ids=long_ids[:, :256])
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(input_ids=long_ids, logits_to_keep=1)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    res = dict(shape=name, weights_gb=weight_bytes(model) / 1e9, decode_tok_s=decode_tps,
               prefill_tokens=prefill, prefill_s=times[1], prefill_tok_s=prefill / times[1],
               gpu=torch.cuda.get_device_name(), torch=torch.__version__, transformers=transformers.__version__)
    print(json.dumps(res), flush=True)
    del model
    torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="qwen2.5-vl-3b,qwen2.5-vl-7b,smolvlm-256m,gemma-3-4b")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=2048)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = [measure(s, a.prompt, a.decode, a.prefill) for s in a.shapes.split(",")]
    print("| shape | weights GB (bf16) | HF eager decode tok/s | HF prefill tok/s (%d tok) |" % a.prefill)
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['weights_gb']:.2f} | {r['decode_tok_s']:.1f} | {r['prefill_tok_s']:.0f} |")


if __name__ == "__main__":
    main()
