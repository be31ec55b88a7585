// UTF-8 checks and repair for the tokenizer and `prepare`.
//
// Well-formed UTF-8 is Unicode's definition (Table 3-7): no overlong forms, no surrogates
// (U+D800..U+DFFF), nothing above U+10FFFF. Repair replaces each maximal ill-formed subpart with
// U+FFFD (EF BF BD), the "substitution of maximal subparts" practice that WHATWG's TextDecoder and
// Python's errors="replace" also follow, so the replacement count is the number of U+FFFD added.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sgpt {

// Length of the longest well-formed prefix of s (== s.size() when all of s is valid).
size_t utf8_valid_prefix(std::string_view s);
inline bool utf8_valid(std::string_view s) { return utf8_valid_prefix(s) == s.size(); }

// Returns s with every maximal ill-formed subpart replaced by U+FFFD; *replaced (if given) is
// increased by the number of replacements.
std::string utf8_repair(std::string_view s, uint64_t* replaced = nullptr);

// Appends the UTF-8 encoding of code point cp (cp <= 0x10FFFF, not a surrogate).
void utf8_append(std::string& out, uint32_t cp);

}  // namespace sgpt
