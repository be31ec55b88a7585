// `sophiagpt tokenize`: encode from an argument and from stdin, decode, special tokens, and the
// error exit for a bad id or a missing vocabulary.
#include <gtest/gtest.h>

#include "test_data_helpers.h"

using sgpt_test::run_exe;

TEST(TokenizeCommand, EncodesArgumentAndStdin) {
  const std::string vocab = sgpt_test::vocab_dir();
  auto r = run_exe({"tokenize", "--vocab", vocab, "Hello world"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output, "15496 995\n");
  r = run_exe({"tokenize", "--vocab", vocab}, "hello world");
  EXPECT_EQ(r.output, "31373 995\n");
  r = run_exe({"tokenize", "--vocab", vocab, "--json", "--allow-special", "hello <|endoftext|>"});
  EXPECT_EQ(r.output, "[31373, 220, 50256]\n");
}

TEST(TokenizeCommand, DecodesExactly) {
  const std::string vocab = sgpt_test::vocab_dir();
  auto r = run_exe({"tokenize", "--vocab", vocab, "--decode", "15496", "995"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.output, "Hello world");
  r = run_exe({"tokenize", "--vocab", vocab, "--decode"}, "[31373, 220, 50256]");
  EXPECT_EQ(r.output, "hello <|endoftext|>");
}

TEST(TokenizeCommand, BadIdAndMissingVocabAreErrors) {
  auto r = run_exe({"tokenize", "--vocab", sgpt_test::vocab_dir(), "--decode", "15496", "70000"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("error: token id 70000 at position 1 is outside the GPT-2 vocabulary"),
            std::string::npos)
      << r.output;
  r = run_exe({"tokenize", "--vocab", "/nonexistent-vocab-dir", "hi"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("/nonexistent-vocab-dir/encoder.json: GPT-2 vocabulary file not found"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("scripts/fetch_assets.sh"), std::string::npos) << r.output;
}

TEST(TokenizeCommand, InvalidUtf8IsReplacedAndReported) {
  auto r = run_exe({"tokenize", "--vocab", sgpt_test::vocab_dir()}, "Hello\xFF");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("1 ill-formed sequence(s) replaced by U+FFFD"), std::string::npos) << r.output;
}
