#!/usr/bin/env python3
"""Independent check of sophiagpt's model against PyTorch (run where PyTorch is installed; the
trainer never depends on it).

Reads a model file written by sophiagpt (llm.c's format, docs in src/model/checkpoint.h) and an
llm.c token shard, rebuilds GPT-2 from those numbers alone with plain torch operations, and prints
the mean cross-entropy over the same batches `sophiagpt eval` uses (sequence j = tokens
[j*T, j*T+T] of the first file, batch g = sequences [g*B, (g+1)*B), no shuffling). With
--expect LOSS it compares with sophiagpt's figure and exits 1 when the relative difference exceeds
--rtol.

    python3 scripts/dev/check_torch.py --model runs/demo/sophiag/model_00000400.bin \\
        --shard data/shards/sotu/val_000000.bin --B 8 --batches 8 --expect 6.809 --rtol 1e-5

The model here is written from GPT-2's definition, not from our code: pre-LayerNorm blocks (eps
1e-5), causal softmax attention with scale 1/sqrt(head size) (divided by layer+1 when the file
says scale_attn_by_inverse_layer_idx), GELU tanh form, tied LM head over the padded vocabulary,
the loss over the first V logits. Computed in float64.
"""
import argparse
import math
import sys

import numpy as np
import torch


def read_model(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype="<i4")
        if header[0] != 20240326 or header[1] != 3:
            sys.exit(f"{path}: not an fp32 llm.c model file (magic {header[0]}, version {header[1]})")
        maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
        bias_flag, scale_flag = int(header[8]), int(header[9])
        params = np.frombuffer(f.read(), dtype="<f4")
    shapes = [
        ("wte", (Vp, C)), ("wpe", (maxT, C)), ("ln1w", (L, C)), ("ln1b", (L, C)),
        ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)),
        ("attprojb", (L, C)), ("ln2w", (L, C)), ("ln2b", (L, C)), ("fcw", (L, 4 * C, C)),
        ("fcb", (L, 4 * C)), ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)), ("lnfw", (C,)),
        ("lnfb", (C,)),
    ]
    total = sum(math.prod(s) for _, s in shapes)
    if params.size != total:
        sys.exit(f"{path}: {params.size} parameters, the header implies {total}")
    out, off = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        out[name] = torch.from_numpy(params[off:off + n].astype(np.float64).reshape(shape))
        off += n
    cfg = dict(maxT=maxT, V=V, L=L, NH=NH, C=C, Vp=Vp,
               scale_by_layer=(scale_flag == 2), bias_recorded=bias_flag)
    return cfg, out


def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype="<i4")
        if header[0] != 20240520 or header[1] != 1:
            sys.exit(f"{path}: not an llm.c token shard")
        n = int(header[2])
        tokens = np.frombuffer(f.read(n * 2), dtype="<u2")
    if tokens.size != n:
        sys.exit(f"{path}: header says {n} tokens, file holds {tokens.size}")
    return tokens.astype(np.int64)


def layernorm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def loss(cfg, p, inp, tgt):
    B, T = inp.shape
    C, NH, L, V = cfg["C"], cfg["NH"], cfg["L"], cfg["V"]
    hs = C // NH
    x = p["wte"][inp] + p["wpe"][:T]
    causal = torch.ones(T, T, dtype=torch.bool, device=inp.device).tril()
    for l in range(L):
        h = layernorm(x, p["ln1w"][l], p["ln1b"][l])
        qkv = h @ p["qkvw"][l].T + p["qkvb"][l]
        q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in qkv.split(C, dim=-1))
        scale = 1.0 / math.sqrt(hs)
        if cfg["scale_by_layer"]:
            scale /= l + 1
        att = (q @ k.transpose(-2, -1)) * scale
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p["attprojw"][l].T + p["attprojb"][l]
        h = layernorm(x, p["ln2w"][l], p["ln2b"][l])
        h = gelu(h @ p["fcw"][l].T + p["fcb"][l])
        x = x + h @ p["fcprojw"][l].T + p["fcprojb"][l]
    x = layernorm(x, p["lnfw"], p["lnfb"])
    logits = (x @ p["wte"].T)[..., :V]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="sophiagpt/llm.c fp32 model file")
    ap.add_argument("--shard", required=True, help="llm.c token shard (the first val file)")
    ap.add_argument("--B", type=int, required=True, help="micro-batch size of the eval")
    ap.add_argument("--T", type=int, default=0, help="sequence length (default: the block size)")
    ap.add_argument("--batches", type=int, required=True)
    ap.add_argument("--expect", type=float, help="sophiagpt's val loss to compare with")
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, p = read_model(a.model)
    p = {k: v.to(dev) for k, v in p.items()}
    T = a.T or cfg["maxT"]
    tokens = read_shard(a.shard)
    n_seq = (tokens.size - 1) // T
    if a.batches * a.B > n_seq:
        sys.exit(f"{a.shard}: {n_seq} sequences of {T}, fewer than {a.batches} x {a.B}")
    total = 0.0
    with torch.no_grad():
        for g in range(a.batches):
            seqs = [tokens[j * T:j * T + T + 1] for j in range(g * a.B, (g + 1) * a.B)]
            arr = torch.from_numpy(np.stack(seqs)).to(dev)
            total += loss(cfg, p, arr[:, :-1], arr[:, 1:])
    mean = total / a.batches
    print(f"torch float64 loss {mean:.6f} over {a.batches} batches of {a.B} x {T} "
          f"(L={cfg['L']} NH={cfg['NH']} C={cfg['C']} V={cfg['V']}, "
          f"scale by layer: {cfg['scale_by_layer']}, {dev})")
    if a.expect is not None:
        rel = abs(mean - a.expect) / abs(mean)
        ok = rel <= a.rtol
        print(f"sophiagpt {a.expect:.6f}: relative difference {rel:.2e} "
              f"({'within' if ok else 'OUTSIDE'} rtol {a.rtol:g})")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
