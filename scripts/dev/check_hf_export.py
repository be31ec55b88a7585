#!/usr/bin/env python3
"""Checks one `sophiagpt export --format hf` folder with Hugging Face transformers (run by
scripts/dev/check_hf_export.sh, on a machine that has torch, transformers and safetensors; the program
itself never needs Python).

  check_hf_export.py --sophiagpt BIN --run RUN --hf DIR --shard VAL.bin [--hf-bf16 DIR] [--name NAME]

Checks, one PASS/FAIL line each, exit status 1 when any fails:
  load         GPT2LMHeadModel.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR) with no
               other argument; no missing or unexpected tensor; lm_head tied to wte; the config's
               shape and scale_attn_by_inverse_layer_idx equal the run's config.json
  logits       the HF model's logits (CPU, float32) on block_size tokens of real text (from the
               validation shard, starting at a document boundary) against `sophiagpt logits` on the
               same tokens, for the attention the default load picks and for eager attention:
                   max |hf - ours| <= 1e-3 * max(1, max |ours|)
               Both sides compute in float32 and differ only in summation order (blocked GEMMs
               against our sequential sums) and in the order of the scale factors of attention:
               a few float32 ulps per operation, 1e-6 relative or less for these models. A wrong
               layout (an untransposed weight, swapped q/k/v, a wrong layer) changes logits by an
               amount of the order of the logits themselves, orders of magnitude above the bound. A few training steps leave attention almost uniform, so the opposite
               scale_attn_by_inverse_layer_idx can stay inside that bound too; a further check
               asks the eager logits to be at least 10x closer to ours than those computed with
               the opposite setting.
  tokenizer    the HF tokenizer's ids equal `sophiagpt tokenize` on a fixed English paragraph and on
               a decoded piece of the validation shard, and decode back to the same text
  bf16         (with --hf-bf16) every tensor of the bf16 export equals the fp32 export's tensor
               rounded by torch to bfloat16 (round to nearest even), bit for bit
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, GPT2LMHeadModel

PARAGRAPH = (
    "The committee's report, published on 3 March 2021, didn't mince words: \"We've spent $4.5 billion "
    "and 12,000 hours -- yet the bridge isn't finished.\"\n\nIn the end, they'll rebuild it (again).   "
    "Caf\u00e9 owners near the river said it's been \u201chard\u201d; one added: I'm hopeful.\n"
    "Numbers like 3.14159, 2048 and 1e-5 appear too; so do tabs\tand trailing spaces.  "
)
EOT = 50256
failures = 0


def report(ok, name, detail):
    global failures
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        failures += 1


def run(cmd):
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def our_encode(exe, text):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        return [int(x) for x in run([exe, "tokenize", "--file", path]).split()]
    finally:
        os.unlink(path)


def our_decode(exe, ids):
    return run([exe, "tokenize", "--decode", ",".join(map(str, ids))])


def our_logits(exe, run_dir, ids, vocab_size):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.bin")
        run([exe, "logits", "--run", run_dir, "--tokens", ",".join(map(str, ids)), "--out", out])
        a = np.fromfile(out, dtype="<f4")
    return a.reshape(len(ids), vocab_size)


def shard_tokens(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, version, count = struct.unpack("<3i", data[:12])
    if magic != 20240520:
        raise RuntimeError(f"{path}: not an llm.c token shard (magic {magic})")
    return np.frombuffer(data, dtype="<u2", count=count, offset=1024).astype(np.int64)


def document_window(tokens, n):
    """n tokens from the start of the first document (after an <|endoftext|>) that has n of them."""
    eots = np.flatnonzero(tokens == EOT)
    for i, e in enumerate(eots):
        end = eots[i + 1] if i + 1 < len(eots) else len(tokens)
        if end - (e + 1) >= n:
            return [int(t) for t in tokens[e + 1 : e + 1 + n]]
    raise RuntimeError(f"no document of {n} tokens in the shard")


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].float().numpy()


def compare(name, hf, ours):
    diff = float(np.max(np.abs(hf.astype(np.float64) - ours.astype(np.float64))))
    scale = max(1.0, float(np.max(np.abs(ours))))
    tol = 1e-3 * scale
    report(diff <= tol, name, f"max |diff| {diff:.3g}, bound {tol:.3g} (max |logit| {scale:.3g})")
    return diff, tol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sophiagpt", required=True)
    ap.add_argument("--run", required=True, help="run directory the export came from")
    ap.add_argument("--hf", required=True, help="the fp32 export")
    ap.add_argument("--hf-bf16", help="a bf16 export of the same checkpoint")
    ap.add_argument("--shard", required=True, help="validation shard (llm.c format)")
    ap.add_argument("--name", default="")
    a = ap.parse_args()
    tag = f"[{a.name}] " if a.name else ""
    torch.set_grad_enabled(False)

    with open(os.path.join(a.run, "config.json")) as f:
        mc = json.load(f)["model"]
    T, V = mc["block_size"], mc["vocab_size"]

    # ---- load ----
    model = GPT2LMHeadModel.from_pretrained(a.hf)
    model.eval()
    tok = AutoTokenizer.from_pretrained(a.hf)
    _, info = GPT2LMHeadModel.from_pretrained(a.hf, output_loading_info=True)
    missing, unexpected = list(info.get("missing_keys", [])), list(info.get("unexpected_keys", []))
    c = model.config
    shape_ok = (c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size) == (
        mc["n_layer"], mc["n_head"], mc["n_embd"], T, V)
    flag_ok = bool(c.scale_attn_by_inverse_layer_idx) == bool(mc["scale_attn_by_inverse_layer_idx"])
    tied = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    attn = getattr(c, "_attn_implementation", "?")
    report(not missing and not unexpected and shape_ok and flag_ok and tied, tag + "load",
           f"transformers {transformers.__version__}, attention '{attn}', missing {missing}, "
           f"unexpected {unexpected}, shape {'ok' if shape_ok else 'WRONG'}, "
           f"scale_attn_by_inverse_layer_idx {c.scale_attn_by_inverse_layer_idx} "
           f"({'as trained' if flag_ok else 'NOT as trained'}), lm_head {'tied' if tied else 'NOT tied'}, "
           f"tokenizer {type(tok).__name__}")

    # ---- logits ----
    ids = document_window(shard_tokens(a.shard), T)
    ours = our_logits(a.sophiagpt, a.run, ids, V)
    model.float()
    compare(tag + f"logits ({attn} attention, default load)", hf_logits(model, ids), ours)
    eager = GPT2LMHeadModel.from_pretrained(a.hf, attn_implementation="eager").float().eval()
    diff, tol = compare(tag + "logits (eager attention)", hf_logits(eager, ids), ours)
    # A model trained a few steps attends almost uniformly, so the opposite attention scaling can
    # stay inside the bound above: check that the run's setting is the one that matches, by far.
    flipped = GPT2LMHeadModel.from_pretrained(a.hf, attn_implementation="eager",
                                              scale_attn_by_inverse_layer_idx=not c.scale_attn_by_inverse_layer_idx)
    fl = hf_logits(flipped.float().eval(), ids)
    fd = float(np.max(np.abs(fl.astype(np.float64) - ours.astype(np.float64))))
    report(fd >= 10 * diff, tag + "logits single out the run's scale_attn_by_inverse_layer_idx",
           f"max |diff| {diff:.3g} as exported, {fd:.3g} with the opposite setting (needs >= 10x)")

    # ---- tokenizer ----
    special_ok = (tok.eos_token == "<|endoftext|>" and tok.bos_token == "<|endoftext|>"
                  and tok.unk_token == "<|endoftext|>" and tok.eos_token_id == EOT and tok.model_max_length == T)
    report(special_ok, tag + "tokenizer special tokens",
           f"eos {tok.eos_token!r} ({tok.eos_token_id}), bos {tok.bos_token!r}, unk {tok.unk_token!r}, "
           f"model_max_length {tok.model_max_length}")
    val = shard_tokens(a.shard)
    piece = document_window(val, 400) if len(val) > 1000 else ids
    raw = our_decode(a.sophiagpt, piece)
    while True:  # the window may end inside a multi-byte character: drop tokens until it does not
        try:
            val_text = raw.decode("utf-8")
            break
        except UnicodeDecodeError:
            piece = piece[:-1]
            raw = our_decode(a.sophiagpt, piece)
    for label, text in (("paragraph", PARAGRAPH), ("validation text", val_text)):
        hf_ids = tok.encode(text)
        our_ids = our_encode(a.sophiagpt, text)
        first = next((i for i, (x, y) in enumerate(zip(hf_ids, our_ids)) if x != y), min(len(hf_ids), len(our_ids)))
        report(hf_ids == our_ids, tag + f"tokenizer encode ({label})",
               f"{len(hf_ids)} ids from transformers, {len(our_ids)} from sophiagpt"
               + ("" if hf_ids == our_ids else f", first difference at {first}"))
        back = tok.decode(hf_ids)
        ours_back = our_decode(a.sophiagpt, hf_ids).decode("utf-8")
        report(back == text and ours_back == text, tag + f"tokenizer round trip ({label})",
               f"transformers decode {'==' if back == text else '!='} text, "
               f"sophiagpt decode {'==' if ours_back == text else '!='} text")

    # ---- bf16 ----
    if a.hf_bf16:
        m16 = GPT2LMHeadModel.from_pretrained(a.hf_bf16)
        p32 = dict(model.state_dict())
        p16 = dict(m16.state_dict())
        bad = [k for k in p32 if k not in p16 or not torch.equal(
            p16[k].to(torch.bfloat16).float(), p32[k].to(torch.bfloat16).float())]
        # The bytes themselves must be bf16 (the dtype the loader reports for the file).
        from safetensors import safe_open
        with safe_open(os.path.join(a.hf_bf16, "model.safetensors"), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        report(not bad and dtypes == {"BF16"}, tag + "bf16 export",
               f"{len(p32)} tensors, file dtypes {sorted(dtypes)}, "
               f"{len(bad)} differ from torch's bf16 rounding of the fp32 export {bad[:3]}")

    print(f"{tag}{'all checks passed' if failures == 0 else f'{failures} check(s) FAILED'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
