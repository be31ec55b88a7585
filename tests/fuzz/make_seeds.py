#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/ that need no C++ writer (configs, token files,
tokenizer text). The checkpoint seeds are written by our own writers: scripts/dev/fuzz.sh --seeds.
Run from the repository root: python3 tests/fuzz/make_seeds.py"""
import os
import shutil
import struct

C = "tests/fuzz/corpus"

def put(target, name, data):
    os.makedirs(f"{C}/{target}", exist_ok=True)
    with open(f"{C}/{target}/{name}", "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)

# Configs: real ones from configs/, and documents with --set assignments after a NUL byte.
for name in ("tiny_cpu.json", "demo.json", "gpt2_125m_adamw.json"):
    shutil.copy(f"configs/{name}", f"{C}/fuzz_config/{name}")
put("fuzz_config", "empty_object.json", "{}")
put("fuzz_config", "with_sets.txt", '{"model": {"n_layer": 2}}\0optimizer.lr=3e-4\nmodel.bias=true\ndata.format=nanogpt\ndist.init="tcp://h:1"')
put("fuzz_config", "duplicate_key.json", '{"seed": 1, "seed": 2}')
put("fuzz_config", "bad_range.json", '{"optimizer": {"lr": 1e400, "name": "adamw"}, "batch": {"micro_batch_size": -1}}')

# Token files: a tiny llm.c shard (256 int32 header: magic, version, N) and a nanoGPT file.
toks = [50256, 464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256, 0, 1]
hdr = [0] * 256
hdr[0], hdr[1], hdr[2] = 20240520, 1, len(toks)
put("fuzz_token_file", "shard.bin", struct.pack("<256i", *hdr) + struct.pack(f"<{len(toks)}H", *toks))
hdr[2] = 0
put("fuzz_token_file", "shard_empty.bin", struct.pack("<256i", *hdr))
put("fuzz_token_file", "nanogpt.bin", struct.pack(f"<{len(toks)}H", *toks))
put("fuzz_token_file", "nanogpt_bad_token.bin", struct.pack("<3H", 1, 65535, 2))

# Tokenizer text: English, contractions, numbers, whitespace runs, Unicode, the special token.
put("fuzz_tokenizer", "english.txt", "The quick brown fox jumps over the lazy dog. It's 2024; we'll see.\n")
put("fuzz_tokenizer", "whitespace.txt", "a  b\t\tc\n\n\n   d \r\n  ")
put("fuzz_tokenizer", "unicode.txt", "naïve café — 東京 😀 Ελληνικά русский عربى\u200d\U0001F468\u200d\U0001F469")
put("fuzz_tokenizer", "special.txt", "<|endoftext|>Hello<|endoftext|><|endoftext|> <|endof")
put("fuzz_tokenizer", "numbers.txt", "1234567890 3.14159 -42 0x1F 1e10 I'm you're they've he'd")
put("fuzz_tokenizer", "invalid_utf8.bin", b"abc\xff\xfe\xc3(\xe2\x82")
