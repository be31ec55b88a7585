// Reference check of the GPT-2 tokenizer: compares the token file written by
// `sophiagpt prepare --format nanogpt --val-fraction 0` with what an independent encoder, the npm
// package gpt-tokenizer (r50k_base = GPT-2's encoding, fetched by scripts/fetch_assets.sh), gives
// for the same documents: <|endoftext|> then the document's tokens, documents in prepare's order.
// Run by scripts/dev/check_tokenizer.sh; usage:
//
//   node check_tokenizer.mjs gen DIR N SEED          write N random Unicode documents DIR/rand_*.txt
//   node check_tokenizer.mjs compare BIN INPUT...    INPUT: a directory of .txt, a .txt, or a
//                                                    .jsonl / .jsonl.xz with a "text" field
//
// The random documents mix ASCII words, contractions, digits of several scripts, letters of
// several scripts with combining marks, emoji, punctuation and every kind of whitespace run, so
// they exercise each branch of GPT-2's pre-tokenizer regex. They leave out U+0085 and U+FEFF, the
// two code points on which JavaScript's \s (used by gpt-tokenizer) differs from the Unicode
// White_Space property that GPT-2's Python regex uses, and code points newer than Unicode 13, so
// that both sides classify letters and numbers alike.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cache = process.env.SGPT_CACHE_DIR || path.join(root, 'data', 'cache');

function die(msg) {
  console.error(`check_tokenizer: ${msg}`);
  process.exit(1);
}

// xorshift128+ style generator: deterministic by seed, independent of Math.random.
function rng(seed) {
  let a = BigInt(seed) * 0x9E3779B97F4A7C15n + 1n, b = 0x2545F4914F6CDD1Dn;
  const M = (1n << 64n) - 1n;
  return () => {
    let x = a; const y = b; a = y;
    x = (x ^ (x << 23n)) & M; b = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number(((b + y) & M) >> 11n) / 2 ** 53;
  };
}

function generate(dir, n, seed) {
  const r = rng(seed);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const range = (lo, hi) => String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)));
  const repeat = (f, k) => Array.from({ length: k }, f).join('');
  const words = ['the', 'The', 'hello', 'world', 'GPT', 'tokenizer', 'Sophia', 'a', 'I', 'naïve', 'café',
    'Zürich', 'straße', 'don', 'it', 'we', 'they', 'x', 'ABC', 'camelCase', 'snake_case', 'email@example.com',
    'https://example.org/a?b=c', '<|endoftext|>', '<|endoftext', 'endoftext|>'];
  const spaces = [' ', '  ', '\t', '\n', '\n\n', '\r\n', ' \n', '\u00A0', '\u2000', '\u2009', '\u200A',
    '\u202F', '\u205F', '\u3000', '\u1680', '\u2028', '\u2029', '\x0B', '\x0C', '   \t '];
  const makers = [
    () => pick(words),
    () => pick(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "''", "'x"]),
    () => repeat(() => range(0x30, 0x39), 1 + Math.floor(r() * 12)),          // ASCII digits
    () => repeat(() => range(0x660, 0x669), 1 + Math.floor(r() * 4)),          // Arabic-Indic digits
    () => repeat(() => range(0xFF10, 0xFF19), 1 + Math.floor(r() * 4)),        // fullwidth digits
    () => pick(['\u00B2', '\u00BD', '\u2160', '\u2167', '\u2460', '\u0BF1']),  // No / Nl numbers
    () => repeat(() => range(0x61, 0x7A), 1 + Math.floor(r() * 10)),
    () => repeat(() => range(0xC0, 0xFF).replace(/[\u00D7\u00F7]/, 'e'), 1 + Math.floor(r() * 6)),
    () => repeat(() => range(0x3B1, 0x3C9), 1 + Math.floor(r() * 8)),          // Greek
    () => repeat(() => range(0x430, 0x44F), 1 + Math.floor(r() * 8)),          // Cyrillic
    () => repeat(() => range(0x5D0, 0x5EA), 1 + Math.floor(r() * 6)),          // Hebrew
    () => repeat(() => range(0x4E00, 0x9FA5), 1 + Math.floor(r() * 6)),        // CJK
    () => repeat(() => range(0x3041, 0x3094), 1 + Math.floor(r() * 6)),        // Hiragana
    () => repeat(() => range(0xAC00, 0xD7A3), 1 + Math.floor(r() * 4)),        // Hangul
    () => range(0x915, 0x939) + pick(['\u093F', '\u094D', '\u0902', '']) + range(0x915, 0x939), // Devanagari + marks
    () => 'e\u0301' + pick(['', '\u0308', 'x']),                               // combining marks
    () => repeat(() => range(0x1F600, 0x1F64F), 1 + Math.floor(r() * 3)),      // emoji (4-byte)
    () => pick(['👍🏽', '👨‍👩‍👧', '🇩🇪', '\u200D', '\u200B', '\u00AD']),
    () => repeat(() => pick(['.', ',', '!', '?', '-', '--', '...', '"', '(', ')', '[', ']', '{', '}', '#', '$',
      '%', '&', '*', '+', '/', '\\', ':', ';', '<', '=', '>', '@', '^', '_', '`', '|', '~', '€', '£', '§', '©',
      '\u00BF', '\u2014', '\u201C', '\u201D', '\u3002', '\u300C']), 1 + Math.floor(r() * 4)),
    () => repeat(() => range(0x20, 0x7E), 1 + Math.floor(r() * 20)),           // any printable ASCII
    () => repeat(() => range(0x1, 0x1F).replace(/[\t\n\x0B\x0C\r]/, ''), 1 + Math.floor(r() * 3)), // controls
    () => repeat(() => ' ', 1 + Math.floor(r() * 40)),                         // long space runs
  ];
  fs.mkdirSync(dir, { recursive: true });
  for (let d = 0; d < n; ++d) {
    let s = '';
    const pieces = 20 + Math.floor(r() * 400);
    for (let i = 0; i < pieces; ++i) {
      s += pick(makers)();
      if (r() < 0.6) s += pick(spaces);
    }
    if (r() < 0.3) s += pick(spaces);  // trailing whitespace
    if (s.length === 0) s = 'x';
    fs.writeFileSync(path.join(dir, `rand_${String(d).padStart(4, '0')}.txt`), s, 'utf8');
  }
}

function documents(input) {
  const st = fs.statSync(input);
  if (st.isDirectory()) {
    const files = [];
    const walk = (d) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.name.startsWith('.')) continue;
        if (e.isDirectory()) walk(p); else if (e.name.endsWith('.txt')) files.push(p);
      }
    };
    walk(input);
    files.sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
    return files.map((f) => ({ text: fs.readFileSync(f, 'utf8'), origin: f }));
  }
  if (input.endsWith('.txt')) return [{ text: fs.readFileSync(input, 'utf8'), origin: input }];
  if (input.endsWith('.jsonl') || input.endsWith('.jsonl.xz')) {
    const raw = input.endsWith('.xz') ? execFileSync('xz', ['-dc', input], { maxBuffer: 2 ** 32 }) : fs.readFileSync(input);
    return raw.toString('utf8').split('\n').map((l, i) => ({ l, i }))
      .filter(({ l }) => l.trim() !== '')
      .map(({ l, i }) => ({ text: JSON.parse(l).text, origin: `${input}:${i + 1}` }));
  }
  die(`unsupported input ${input}`);
}

function compare(bin, inputs) {
  const require = createRequire(import.meta.url);
  const refDir = path.join(cache, 'reference', 'gpt-tokenizer');
  let enc;
  try {
    enc = require(path.join(refDir, 'cjs', 'encoding', 'r50k_base.js'));
  } catch (e) {
    die(`reference encoder not found in ${refDir}: run scripts/fetch_assets.sh reference (${e.message})`);
  }
  const buf = fs.readFileSync(bin);
  const got = new Uint16Array(buf.buffer, buf.byteOffset, buf.length / 2);
  let pos = 0, docs = 0, bytes = 0;
  const t0 = Date.now();
  for (const input of inputs) {
    for (const { text, origin } of documents(input)) {
      if (text.length === 0) continue;  // prepare skips empty documents
      const want = [50256, ...enc.encode(text, { disallowedSpecial: new Set() })];
      for (let i = 0; i < want.length; ++i) {
        if (got[pos + i] !== want[i]) {
          const ctx = (a, k) => Array.from(a.slice(Math.max(0, k - 5), k + 6)).join(' ');
          die(`MISMATCH in ${origin} at document token ${i} (file token ${pos + i}):\n` +
              `  reference: ... ${ctx(want, i)} ...\n  sophiagpt: ... ${ctx(got.subarray(pos), i)} ...\n` +
              `  text near it: ${JSON.stringify(enc.decode(want.slice(Math.max(1, i - 5), i + 6)))}`);
        }
      }
      pos += want.length;
      docs += 1;
      bytes += Buffer.byteLength(text, 'utf8');
    }
  }
  if (pos !== got.length) die(`sophiagpt wrote ${got.length} tokens, the reference ${pos}`);
  console.log(`check_tokenizer: ${docs} documents, ${(bytes / 1e6).toFixed(2)} MB, ${pos} tokens: ` +
              `all equal to gpt-tokenizer (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'gen' && args.length === 3) generate(args[0], Number(args[1]), Number(args[2]));
else if (cmd === 'compare' && args.length >= 2) compare(args[0], args.slice(1));
else die('usage: check_tokenizer.mjs gen DIR N SEED | compare BIN INPUT...');
