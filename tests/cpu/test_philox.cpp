// Philox4x32-10 against the published known-answer vectors of the Random123 library
// (kat_vectors: philox4x32 10 rounds).
#include <gtest/gtest.h>

#include "common/philox.h"

using sgpt::philox4x32_10;

TEST(Philox, KnownAnswerZero) {
  const auto r = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
}

TEST(Philox, KnownAnswerOnes) {
  const auto r = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(r.v[0], 0x408f276du);
  EXPECT_EQ(r.v[1], 0x41c83b0eu);
  EXPECT_EQ(r.v[2], 0xa20bc7c6u);
  EXPECT_EQ(r.v[3], 0x6d5451fdu);
}

TEST(Philox, KnownAnswerPi) {
  const auto r = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[1], 0x94fdccebu);
  EXPECT_EQ(r.v[2], 0x5001e420u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(Philox, UniformRange) {
  EXPECT_EQ(sgpt::uniform01(0u), 0.0f);
  EXPECT_LT(sgpt::uniform01(~0u), 1.0f);
  // Mean of many GNB uniforms is close to 1/2 (standard error 1/sqrt(12 n) = 0.0009 for n = 1e5).
  double s = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) s += sgpt::gnb_uniform(7, 3, i / 100, i % 100);
  EXPECT_NEAR(s / n, 0.5, 0.005);
}
