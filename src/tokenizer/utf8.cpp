// UTF-8 validation and repair (see utf8.h for the rules).
#include "tokenizer/utf8.h"

#include <cstring>

namespace sgpt {
namespace {

// Length of the well-formed sequence at p (1..4), or 0 if the bytes at p do not start one. When 0,
// *bad receives the length of the maximal ill-formed subpart (>= 1) to replace with one U+FFFD.
inline size_t utf8_sequence(const uint8_t* p, size_t avail, size_t* bad) {
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;        // no overlongs
    else if (b0 == 0xED) hi = 0x9F;   // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;        // no overlongs
    else if (b0 == 0xF4) hi = 0x8F;   // nothing above U+10FFFF
  } else {
    *bad = 1;
    return 0;
  }
  size_t i = 1;
  for (; i < need && i < avail; ++i) {
    const uint8_t lo_i = (i == 1) ? lo : 0x80, hi_i = (i == 1) ? hi : 0xBF;
    if (p[i] < lo_i || p[i] > hi_i) break;
  }
  if (i == need) return need;
  *bad = i;  // lead byte plus the continuation bytes that were still valid
  return 0;
}

}  // namespace

size_t utf8_valid_prefix(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t bad = 0;
    const size_t len = utf8_sequence(p + i, n - i, &bad);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

std::string utf8_repair(std::string_view s, uint64_t* replaced) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const size_t good = utf8_valid_prefix(s.substr(i));
    out.append(s.data() + i, good);
    i += good;
    if (i >= n) break;
    size_t bad = 1;
    utf8_sequence(p + i, n - i, &bad);
    out.append("\xEF\xBF\xBD");
    if (replaced) ++*replaced;
    i += bad;
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace sgpt
