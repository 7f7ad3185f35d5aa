"""One-off comparison of `attn mha --hf` with Hugging Face transformers' own
attention (not in CI: it needs torch). For each family a small random model is
built from a config in the family's real field names, saved with
save_pretrained (the real checkpoint layout), and run on random embeddings; a
forward hook captures one layer's attention input (after its RMSNorm) and
output; `attn mha --hf DIR --layer I` runs on that input and is compared with
HF's output.

    pip install torch transformers
    cargo build --release -p attn
    python3 tools/hf-compare/compare.py target/release/attn
"""

import json
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

ATTN = sys.argv[1] if len(sys.argv) > 1 else "target/release/attn"

FAMILIES = {
    "llama (llama3 scaling)": dict(model_type="llama", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, intermediate_size=96, vocab_size=128, max_position_embeddings=1024, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=16)),
    "llama (dynamic NTK past its context)": dict(model_type="llama", hidden_size=64, num_attention_heads=4,
        num_key_value_heads=4, num_hidden_layers=2, intermediate_size=96, vocab_size=128, max_position_embeddings=8,
        rope_scaling=dict(rope_type="dynamic", factor=2.0)),
    "mistral (window 5)": dict(model_type="mistral", hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
        head_dim=16, num_hidden_layers=2, intermediate_size=96, vocab_size=128, sliding_window=5),
    "qwen2 (biases, yarn)": dict(model_type="qwen2", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, intermediate_size=96, vocab_size=128, max_position_embeddings=64,
        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=16)),
    "qwen3 (QK-norm)": dict(model_type="qwen3", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, num_hidden_layers=2, intermediate_size=96, vocab_size=128),
    "gemma2 (softcap, window)": dict(model_type="gemma2", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, num_hidden_layers=2, intermediate_size=96, vocab_size=128, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, sliding_window=5),
    "gemma3 (QK-norm 1+w, local rope, linear)": dict(model_type="gemma3_text", hidden_size=64, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, num_hidden_layers=2, intermediate_size=96, vocab_size=128,
        query_pre_attn_scalar=16, sliding_window=5, sliding_window_pattern=2,
        rope_scaling=dict(rope_type="linear", factor=8.0)),
    "gpt_oss (sinks, yarn, window)": dict(model_type="gpt_oss", hidden_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_hidden_layers=2, intermediate_size=64, vocab_size=128,
        num_local_experts=4, num_experts_per_tok=2, sliding_window=5,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=131072,
        rope_scaling=dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0, truncate=False,
                          original_max_position_embeddings=4096)),
    "phi3 (fused qkv, longrope, partial rotary)": dict(model_type="phi3", hidden_size=64, num_attention_heads=4, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        num_key_value_heads=2, num_hidden_layers=2, intermediate_size=96, vocab_size=128, partial_rotary_factor=0.5,
        max_position_embeddings=64, original_max_position_embeddings=8,
        rope_scaling=dict(type="longrope", short_factor=[1.0, 1.1, 1.2, 1.4], long_factor=[1.5, 2.0, 4.0, 8.0])),
    "gpt_neox (per-head qkv, rotary_pct)": dict(model_type="gpt_neox", hidden_size=64, num_attention_heads=4,
        num_hidden_layers=2, intermediate_size=96, vocab_size=128, rotary_pct=0.25),
    "gptj (interleaved rotary)": dict(model_type="gptj", n_embd=64, n_head=4, n_layer=2, rotary_dim=8,
        vocab_size=128, n_inner=96),
}


def attention_module(model, layer):
    for path in ["model.layers", "gpt_neox.layers", "transformer.h"]:
        obj = model
        try:
            for p in path.split("."):
                obj = getattr(obj, p)
        except AttributeError:
            continue
        blk = obj[layer]
        for name in ["self_attn", "attention", "attn"]:
            if hasattr(blk, name):
                return getattr(blk, name)
    raise RuntimeError("no attention module found")


def compare(name, cfg_dict, layer, n=12, seed=0):
    torch.manual_seed(seed)
    model_type = cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **cfg_dict)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    # Non-trivial norms, biases and sinks (they start at 0 or 1).
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or "bias" in pname or "sinks" in pname:
                p.add_(torch.randn_like(p) * 0.3)
    captured = {}
    attn = attention_module(model, layer)

    def pre(_mod, args, kwargs):
        hs = kwargs.get("hidden_states", args[0] if args else None)
        captured["x"] = hs.detach().clone()

    def post(_mod, _args, _kwargs, out):
        captured["y"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    attn.register_forward_pre_hook(pre, with_kwargs=True)
    attn.register_forward_hook(post, with_kwargs=True)
    emb = torch.randn(2, n, cfg.hidden_size)
    with torch.no_grad():
        model(inputs_embeds=emb)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        x = captured["x"].numpy().astype(np.float32)
        np.save(f"{d}/x.npy", x)
        r = subprocess.run([ATTN, "mha", "--hf", d, "--layer", str(layer), "--x", f"{d}/x.npy",
                            "--out", f"{d}/y.npy", "--tuning", "heuristic"], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: attn failed: {r.stderr.strip()}")
            return
        y = np.load(f"{d}/y.npy").astype(np.float64)
    want = captured["y"].numpy().astype(np.float64)
    rel = np.linalg.norm(y - want) / np.linalg.norm(want)
    print(f"{name:45s} layer {layer}: rel_l2 {rel:.2e} max_abs {np.abs(y - want).max():.2e}")


only = sys.argv[2] if len(sys.argv) > 2 else ""
for name, cfg in FAMILIES.items():
    if only not in name:
        continue
    for layer in (0, 1):
        compare(name, json.loads(json.dumps(cfg)), layer)
