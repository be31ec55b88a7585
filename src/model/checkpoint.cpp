#include "model/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"

namespace sgpt {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::vector<char> read_all(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot open " + std::string(what) + " '" + path + "': " + errno_text());
  f.seekg(0, std::ios::end);
  const std::streamoff n = f.tellg();
  f.seekg(0);
  std::vector<char> buf(static_cast<size_t>(n));
  if (n > 0 && !f.read(buf.data(), n))
    throw UserError("cannot read " + std::string(what) + " '" + path + "'");
  return buf;
}


float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces) {
  const std::filesystem::path final_path(path);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw UserError("cannot create '" + tmp + "': " + errno_text());
  for (const auto& [data, size] : pieces) {
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {
      const ssize_t w = ::write(fd, p, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        const std::string e = errno_text();
        ::close(fd);
        ::unlink(tmp.c_str());
        throw UserError("cannot write '" + tmp + "': " + e);
      }
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string e = errno_text();
    ::unlink(tmp.c_str());
    throw UserError("cannot write '" + tmp + "': " + e);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string e = errno_text();
    ::unlink(tmp.c_str());
    throw UserError("cannot rename '" + tmp + "' to '" + path + "': " + e);
  }
}

void write_model_file(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params) {
  const ParamLayout L = ParamLayout::make(cfg);
  if (params.size() != L.total) throw std::invalid_argument("write_model_file: parameter count mismatch");
  std::vector<int32_t> header(256, 0);
  header[0] = kModelMagic;
  header[1] = 3;
  header[2] = cfg.block_size;
  header[3] = cfg.vocab_size;
  header[4] = cfg.n_layer;
  header[5] = cfg.n_head;
  header[6] = cfg.n_embd;
  header[7] = cfg.padded_vocab_size;
  header[8] = 1 + (cfg.bias ? 1 : 0);
  header[9] = 1 + (cfg.scale_attn_by_inverse_layer_idx ? 1 : 0);
  size_t zeros = 0;
  for (int i = 0; i < kNumParamTensors; ++i) zeros = std::max(zeros, L.file_size[i] - L.size[i]);
  const std::vector<float> zero(zeros, 0.0f);
  std::vector<std::pair<const void*, size_t>> pieces{{header.data(), header.size() * 4}};
  for (int i = 0; i < kNumParamTensors; ++i) {
    if (L.size[i] > 0) pieces.push_back({params.data() + L.offset[i], L.size[i] * 4});
    else if (L.file_size[i] > 0) pieces.push_back({zero.data(), L.file_size[i] * 4});
  }
  write_file_atomic(path, pieces);
}

std::vector<float> read_model_file(const std::string& path, const ModelConfig& cfg) {
  const std::vector<char> buf = read_all(path, "model file");
  if (buf.size() < 256 * 4) throw UserError("model file '" + path + "' is too short for its 1024-byte header");
  int32_t h[256];
  std::memcpy(h, buf.data(), sizeof(h));
  if (h[0] != kModelMagic)
    throw UserError("model file '" + path + "' has magic " + std::to_string(h[0]) + ", expected " +
                    std::to_string(kModelMagic) + " (llm.c model file)");
  if (h[1] != 3 && h[1] != 5)
    throw UserError("model file '" + path + "' has version " + std::to_string(h[1]) +
                    ", expected 3 (fp32) or 5 (bf16)");
  auto expect = [&](int idx, int want, const char* field) {
    if (h[idx] != want)
      throw UserError("model file '" + path + "' has " + field + " = " + std::to_string(h[idx]) +
                      " but the config says " + std::to_string(want));
  };
  expect(2, cfg.block_size, "block_size (maxT)");
  expect(3, cfg.vocab_size, "vocab_size");
  expect(4, cfg.n_layer, "n_layer");
  expect(5, cfg.n_head, "n_head");
  expect(6, cfg.n_embd, "n_embd");
  expect(7, cfg.padded_vocab_size, "padded vocab_size");
  if (h[8] != 0) expect(8, 1 + (cfg.bias ? 1 : 0), "1 + bias");
  if (h[9] != 0) expect(9, 1 + (cfg.scale_attn_by_inverse_layer_idx ? 1 : 0), "1 + scale_attn_by_inverse_layer_idx");

  const ParamLayout L = ParamLayout::make(cfg);
  size_t file_total = 0;
  for (int i = 0; i < kNumParamTensors; ++i) file_total += L.file_size[i];
  const size_t elem = h[1] == 3 ? 4 : 2;
  const size_t want_bytes = 1024 + file_total * elem;
  if (buf.size() != want_bytes)
    throw UserError("model file '" + path + "' has " + std::to_string(buf.size()) + " bytes, expected " +
                    std::to_string(want_bytes) + " for this model shape");
  std::vector<float> params(L.total);
  size_t pos = 1024;
  for (int i = 0; i < kNumParamTensors; ++i) {
    for (size_t e = 0; e < L.file_size[i]; ++e, pos += elem) {
      float v;
      if (elem == 4) {
        std::memcpy(&v, buf.data() + pos, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, buf.data() + pos, 2);
        v = bf16_to_float(b);
      }
      if (L.size[i] == 0) {
        if (v != 0.0f)
          throw UserError("model file '" + path + "' has non-zero " + param_tensor_name(i) +
                          " but the config has model.bias = false");
      } else {
        params[L.offset[i] + e] = v;
      }
    }
  }
  return params;
}

namespace {
constexpr char kStateMagic[8] = {'S', 'G', 'P', 'T', 'S', 'T', 'A', 'T'};
}

void write_state_file(const std::string& path, const TrainState& state) {
  nlohmann::json meta = state.meta;
  meta["slots"] = state.slot_names;
  const std::string text = meta.dump();
  const uint32_t version = 1, reserved = 0;
  const uint64_t len = text.size();
  std::vector<std::pair<const void*, size_t>> pieces{
      {kStateMagic, 8}, {&version, 4}, {&reserved, 4}, {&len, 8}, {text.data(), text.size()}};
  for (const auto& s : state.slots) pieces.push_back({s.data(), s.size() * 4});
  write_file_atomic(path, pieces);
}

TrainState read_state_file(const std::string& path) {
  const std::vector<char> buf = read_all(path, "training-state file");
  if (buf.size() < 24 || std::memcmp(buf.data(), kStateMagic, 8) != 0)
    throw UserError("training-state file '" + path + "' does not start with the SGPTSTAT magic");
  uint32_t version;
  uint64_t len;
  std::memcpy(&version, buf.data() + 8, 4);
  std::memcpy(&len, buf.data() + 16, 8);
  if (version != 1)
    throw UserError("training-state file '" + path + "' has version " + std::to_string(version) + ", expected 1");
  if (len > buf.size() - 24) throw UserError("training-state file '" + path + "' is truncated (header)");
  TrainState st;
  try {
    st.meta = nlohmann::json::parse(buf.begin() + 24, buf.begin() + 24 + static_cast<std::ptrdiff_t>(len));
    st.slot_names = st.meta.at("slots").get<std::vector<std::string>>();
    const uint64_t n = st.meta.at("n_params").get<uint64_t>();
    size_t pos = 24 + len;
    if (buf.size() != pos + st.slot_names.size() * n * 4)
      throw UserError("training-state file '" + path + "' has " + std::to_string(buf.size()) +
                      " bytes, expected " + std::to_string(pos + st.slot_names.size() * n * 4));
    for (size_t s = 0; s < st.slot_names.size(); ++s, pos += n * 4) {
      std::vector<float> v(n);
      std::memcpy(v.data(), buf.data() + pos, n * 4);
      st.slots.push_back(std::move(v));
    }
  } catch (const nlohmann::json::exception& e) {
    throw UserError("training-state file '" + path + "' has a malformed header: " + e.what());
  }
  return st;
}

}  // namespace sgpt
