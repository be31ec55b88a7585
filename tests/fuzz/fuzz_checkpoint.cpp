// libFuzzer target: the checkpoint readers (src/model/checkpoint.h) on arbitrary bytes: 
// verify_checkpoint_file, read_state_file, and read_model_file both with a fixed small shape and
// with the shape the file's own header claims (when that shape is small, so the reader gets past
// the header checks). Acceptable: success or sgpt::UserError. A file that verify_checkpoint_file
// accepts must also load.
// With SGPT_FUZZ_WRITE_SEEDS=DIR set, the binary writes seed files with our own writers into DIR
// and exits (scripts/dev/fuzz.sh --seeds regenerates tests/fuzz/corpus/fuzz_checkpoint this way).
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "fuzz_common.h"
#include "model/checkpoint.h"
#include "model/gpt2.h"
#include "test_model.h"

namespace {
sgpt::ModelConfig tiny(bool bias) { return sgpt_test::model_config(1, 2, 4, 4, 5, 8, bias); }

template <class F>
bool accepted(const char* what, F&& f) {
  try {
    f();
    return true;
  } catch (const sgpt::UserError&) {
    return false;
  } catch (const std::exception& e) {
    sgpt_fuzz::finding(what, &e);
  }
}

void write_seeds(const std::string& dir) {
  for (bool bias : {false, true}) {
    const sgpt::ModelConfig m = tiny(bias);
    const sgpt::ParamLayout L = sgpt::ParamLayout::make(m);
    std::vector<float> p(L.total);
    for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<float>(i) * 0.01f - 0.5f;
    sgpt::write_model_file(dir + (bias ? "/model_bias.bin" : "/model.bin"), m, p);
  }
  sgpt::TrainState s;
  s.meta = {{"step", 3}, {"optimizer", "sophiag"}, {"n_params", 4}};
  s.slot_names = {"m", "h"};
  s.slots = {{1, 2, 3, 4}, {5, 6, 7, 8}};
  sgpt::write_state_file(dir + "/state.bin", s);
  s.meta = {{"step", 1}, {"optimizer", "adamw"}, {"n_params", 2}};
  s.slot_names = {"m", "v"};
  s.slots = {{1, 2}, {3, 4}};
  sgpt::write_state_file(dir + "/state_adamw.bin", s);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("SGPT_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = sgpt_fuzz::temp_path("ckpt");
  sgpt_fuzz::write_bytes(path, data, size);

  const bool verifies = accepted("verify_checkpoint_file threw an unexpected exception",
                                 [&] { sgpt::verify_checkpoint_file(path); });
  const bool state_ok = accepted("read_state_file threw an unexpected exception",
                                 [&] { (void)sgpt::read_state_file(path); });
  bool model_ok = false;
  for (bool bias : {false, true})
    model_ok |= accepted("read_model_file threw an unexpected exception",
                         [&] { (void)sgpt::read_model_file(path, tiny(bias)); });

  // The shape the header claims, when small.
  if (size >= 1024) {
    int32_t h[10];
    std::memcpy(h, data, sizeof h);
    bool small = true;
    for (int i = 2; i <= 7; ++i) small &= h[i] >= 1 && h[i] <= 256;
    if (small && h[3] <= h[7] && h[4] <= 4 && h[6] % h[5] == 0) {
      for (bool bias : {false, true}) {
        // Header ints 2..7: block_size, vocab_size, n_layer, n_head, n_embd, padded_vocab_size
        // (>= 1 here); 9: 1 when attention is not scaled by the inverse layer index.
        const sgpt::ModelConfig m = sgpt_test::model_config(h[4], h[5], h[6], h[2], h[3], h[7], bias, h[9] != 1);
        model_ok |= accepted("read_model_file (header's shape) threw an unexpected exception",
                             [&] { (void)sgpt::read_model_file(path, m); });
      }
    }
  }
  // What verifies must load (the resume path verifies first, then reads).
  if (verifies && size >= 8 && std::memcmp(data, "SGPTSTAT", 8) == 0 && !state_ok)
    sgpt_fuzz::finding("a state file passes verify_checkpoint_file but read_state_file refuses it");
  (void)model_ok;
  return 0;
}
