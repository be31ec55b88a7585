#include "model/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/paths.h"

namespace sgpt {
namespace {

std::string errno_text() { return std::strerror(errno); }

// A checkpoint must be a regular file (a folder or a pipe would otherwise reach the size
// computation below as -1: std::bad_alloc). UserError naming `what` and the path.
void check_checkpoint_input(const std::string& path, const char* what) {
  check_input_file(path, what);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw UserError(std::string(what) + " '" + path + "' is not a regular file");
}

std::vector<char> read_all(const std::string& path, const char* what) {
  check_checkpoint_input(path, what);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot open " + std::string(what) + " '" + path + "': " + errno_text());
  f.seekg(0, std::ios::end);
  const std::streamoff n = f.tellg();
  if (n < 0) throw UserError("cannot read " + std::string(what) + " '" + path + "': its size is unknown");
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

// Where each format keeps its checksum: 4 bytes that count as zero when it is computed.
constexpr size_t kModelCrcOffset = 11 * 4;  // header slot [11]
constexpr size_t kStateCrcOffset = 12;      // the uint32 after the version

// CRC32C of bytes[0, n) with bytes[hole, hole+4) read as zero; `base` is the file offset of bytes.
uint32_t crc_with_hole(uint32_t crc, const char* bytes, size_t n, size_t base, size_t hole) {
  if (hole + 4 <= base || hole >= base + n) return crc32c_update(crc, bytes, n);
  const size_t a = hole > base ? hole - base : 0;
  const size_t b = std::min(n, hole + 4 - base);
  crc = crc32c_update(crc, bytes, a);
  const char zeros[4] = {0, 0, 0, 0};
  crc = crc32c_update(crc, zeros, b - a);
  return crc32c_update(crc, bytes + b, n - b);
}

uint32_t crc_of_pieces(const std::vector<std::pair<const void*, size_t>>& pieces, size_t hole) {
  uint32_t crc = 0;
  size_t base = 0;
  for (const auto& [data, size] : pieces) {
    crc = crc_with_hole(crc, static_cast<const char*>(data), size, base, hole);
    base += size;
  }
  return crc;
}

std::string hex(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

[[noreturn]] void checksum_mismatch(const char* what, const std::string& path, uint32_t stored, uint32_t computed) {
  throw UserError(std::string(what) + " '" + path + "' fails its checksum (CRC32C stored " + hex(stored) +
                  ", computed " + hex(computed) + "): the file is damaged");
}

// The shape a model header records (for its expected size), or nullopt-like false.
bool header_shape(const int32_t* h, ModelConfig& m) {
  for (int i = 2; i <= 7; ++i)
    if (h[i] < 1 || h[i] > (1 << 24)) return false;
  if (h[4] > 4096 || h[6] > 65536) return false;  // keeps the size arithmetic far from overflow
  m.block_size = h[2];
  m.vocab_size = h[3];
  m.n_layer = h[4];
  m.n_head = h[5];
  m.n_embd = h[6];
  m.padded_vocab_size = h[7];
  return m.padded_vocab_size >= m.vocab_size;
}

// "n_params" of a state file's JSON: a non-negative integer (a float such as 4.6e19 would be an
// out-of-range conversion, undefined behaviour; found by fuzz_checkpoint).
uint64_t n_params_of(const nlohmann::json& meta, const std::string& path) {
  const nlohmann::json& v = meta.at("n_params");
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    throw UserError("training-state file '" + path + "' has a malformed header: n_params is " + v.dump() +
                    ", not a non-negative integer");
  return v.get<uint64_t>();
}

// The slots of a state file must fill exactly the bytes after its JSON: slots * n * 4 == size - pos,
// checked without overflow (a damaged or crafted n_params near 2^64 must not wrap into a match).
void check_state_size(const std::string& path, uint64_t size, uint64_t pos, uint64_t slots, uint64_t n) {
  const uint64_t rem = size >= pos ? size - pos : 0;
  const bool fits = size >= pos && (slots == 0 || n == 0 ? rem == 0 : n <= rem / 4 / slots && slots * n * 4 == rem);
  if (fits) return;
  const bool representable = slots == 0 || n <= (UINT64_MAX - pos) / 4 / slots;
  throw UserError("training-state file '" + path + "' has " + std::to_string(size) + " bytes, expected " +
                  (representable ? std::to_string(pos + slots * n * 4) + " (truncated?)"
                                 : std::to_string(pos) + " + " + std::to_string(slots) + " x " + std::to_string(n) +
                                       " x 4, more than any file holds (damaged?)"));
}

uint64_t model_file_bytes(const ModelConfig& m, int version) {
  const ParamLayout L = ParamLayout::make(m);
  uint64_t total = 0;
  for (int i = 0; i < kNumParamTensors; ++i) total += L.file_size[i];
  return 1024 + total * (version == 3 ? 4 : 2);
}

}  // namespace

namespace {
std::string write_error_text(int err) {
  std::string e = std::strerror(err);
  if (err == EFBIG) e += " (the file-size limit, ulimit -f, is smaller than this file)";
  if (err == ENOSPC) e += " (the disk is full)";
  return e;
}
}  // namespace

void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces) {
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  auto fail = [&](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    throw UserError("cannot write '" + path + "' (" + what + " its temporary file '" + tmp + "'): " +
                    write_error_text(err) + "; any earlier file of that name is unchanged");
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw UserError("cannot write '" + path + "' (creating its temporary file '" + tmp + "'): " + errno_text());
  for (const auto& [data, size] : pieces) {
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {
      const ssize_t w = ::write(fd, p, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        fail("writing", err);
      }
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail("syncing", err);
  }
  if (::close(fd) != 0) fail("closing", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming", errno);
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  // config.resume_N.json, and config.resume_N.K.json for a later resume from the same step.
  const std::regex re(
      R"((model_[0-9]{8}\.bin|state_[0-9]{8}\.bin|config(\.resume_[0-9]{8}(?:\.[0-9]{1,9})?)?\.json)\.tmp([0-9]{1,9}))");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, re) || !e.is_regular_file(ec)) continue;
    const long pid = std::stol(m[3]);
    // Still running (or running as another user): leave it alone.
    if (pid > 0 && pid != ::getpid() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    if (pid == ::getpid()) continue;
    if (fs::remove(e.path(), ec)) removed.push_back(name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::vector<int32_t> model_file_header(const ModelConfig& cfg, int version) {
  std::vector<int32_t> header(256, 0);
  header[0] = kModelMagic;
  header[1] = version;
  header[2] = cfg.block_size;
  header[3] = cfg.vocab_size;
  header[4] = cfg.n_layer;
  header[5] = cfg.n_head;
  header[6] = cfg.n_embd;
  header[7] = cfg.padded_vocab_size;
  header[8] = 1 + (cfg.bias ? 1 : 0);
  header[9] = 1 + (cfg.scale_attn_by_inverse_layer_idx ? 1 : 0);
  header[10] = kModelChecksumTag;
  header[11] = 0;  // the checksum, computed over the whole file with this slot as zero
  return header;
}

uint32_t write_model_file(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params) {
  const ParamLayout L = ParamLayout::make(cfg);
  if (params.size() != L.total) throw std::invalid_argument("write_model_file: parameter count mismatch");
  std::vector<int32_t> header = model_file_header(cfg, 3);
  size_t zeros = 0;
  for (int i = 0; i < kNumParamTensors; ++i) zeros = std::max(zeros, L.file_size[i] - L.size[i]);
  const std::vector<float> zero(zeros, 0.0f);
  std::vector<std::pair<const void*, size_t>> pieces{{header.data(), header.size() * 4}};
  for (int i = 0; i < kNumParamTensors; ++i) {
    if (L.size[i] > 0) pieces.push_back({params.data() + L.offset[i], L.size[i] * 4});
    else if (L.file_size[i] > 0) pieces.push_back({zero.data(), L.file_size[i] * 4});
  }
  const uint32_t crc = crc_of_pieces(pieces, kModelCrcOffset);
  std::memcpy(&header[11], &crc, 4);
  write_file_atomic(path, pieces);
  return crc;
}

int64_t read_model_crc(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw UserError("cannot open model file '" + path + "': " + std::strerror(errno));
  int32_t h[12] = {};
  const size_t n = std::fread(h, 4, 12, f);
  std::fclose(f);
  if (n != 12) throw UserError("model file '" + path + "' is too short for its header");
  if (h[10] != kModelChecksumTag) return -1;
  return static_cast<int64_t>(static_cast<uint32_t>(h[11]));
}

nlohmann::json read_state_meta(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw UserError("cannot open training-state file '" + path + "': " + std::strerror(errno));
  char head[24];
  std::string text;
  uint64_t len = 0;
  bool ok = std::fread(head, 1, 24, f) == 24 && std::memcmp(head, "SGPTSTAT", 8) == 0;
  if (ok) {
    std::memcpy(&len, head + 16, 8);
    ok = len < (uint64_t{1} << 30);
    if (ok) {
      text.resize(len);
      ok = std::fread(text.data(), 1, len, f) == len;
    }
  }
  std::fclose(f);
  if (!ok) throw UserError("training-state file '" + path + "' has a damaged header");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UserError("training-state file '" + path + "' has a malformed header: " + e.what());
  }
}

namespace {
// Magic, version and checksum tag of a model header; true when the file carries a checksum.
bool check_model_header(const std::string& path, const int32_t* h) {
  if (h[0] != kModelMagic)
    throw UserError("model file '" + path + "' has magic " + std::to_string(h[0]) + ", expected " +
                    std::to_string(kModelMagic) + " (llm.c model file)");
  if (h[1] != 3 && h[1] != 5)
    throw UserError("model file '" + path + "' has version " + std::to_string(h[1]) +
                    ", expected 3 (fp32) or 5 (bf16)");
  if (h[10] == kModelChecksumTag) return true;
  if (h[10] == 0 && h[11] == 0) return false;
  throw UserError("model file '" + path + "' has a damaged header (checksum slots [10], [11] = " +
                  std::to_string(h[10]) + ", " + std::to_string(h[11]) + ")");
}
}  // namespace

std::vector<float> read_model_file(const std::string& path, const ModelConfig& cfg, bool* verified) {
  const std::vector<char> buf = read_all(path, "model file");
  if (buf.size() < 256 * 4) throw UserError("model file '" + path + "' is too short for its 1024-byte header");
  int32_t h[256];
  std::memcpy(h, buf.data(), sizeof(h));
  const bool has_crc = check_model_header(path, h);
  // Damage first (size for the header's own shape, then the checksum), then the config's shape.
  ModelConfig own;
  if (!header_shape(h, own)) throw UserError("model file '" + path + "' has a damaged header (shape fields)");
  if (buf.size() != model_file_bytes(own, h[1]))
    throw UserError("model file '" + path + "' has " + std::to_string(buf.size()) + " bytes, expected " +
                    std::to_string(model_file_bytes(own, h[1])) + " for the shape in its header (truncated?)");
  if (has_crc) {
    const uint32_t computed = crc_with_hole(0, buf.data(), buf.size(), 0, kModelCrcOffset);
    if (computed != static_cast<uint32_t>(h[11])) checksum_mismatch("model file", path, static_cast<uint32_t>(h[11]), computed);
  }
  if (verified) *verified = has_crc;
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
  const uint32_t version = kStateVersion;
  uint32_t crc = 0;  // computed below, over the whole file with this field as zero
  const uint64_t len = text.size();
  std::vector<std::pair<const void*, size_t>> pieces{
      {kStateMagic, 8}, {&version, 4}, {&crc, 4}, {&len, 8}, {text.data(), text.size()}};
  for (const auto& s : state.slots) pieces.push_back({s.data(), s.size() * 4});
  crc = crc_of_pieces(pieces, kStateCrcOffset);
  write_file_atomic(path, pieces);
}

namespace {
// Magic and version of a state header; true when the file carries a checksum (stored in *crc).
bool check_state_header(const std::string& path, const char* b, size_t size, uint32_t* crc, uint64_t* len) {
  if (size < 24 || std::memcmp(b, kStateMagic, 8) != 0)
    throw UserError("training-state file '" + path + "' does not start with the SGPTSTAT magic");
  uint32_t version;
  std::memcpy(&version, b + 8, 4);
  std::memcpy(crc, b + kStateCrcOffset, 4);
  std::memcpy(len, b + 16, 8);
  if (version != 1 && version != kStateVersion)
    throw UserError("training-state file '" + path + "' has version " + std::to_string(version) +
                    ", expected 1 or " + std::to_string(kStateVersion));
  // Version 1 wrote zero there: anything else is damage.
  if (version == 1 && *crc != 0) throw UserError("training-state file '" + path + "' has a damaged header");
  if (*len > size - 24) throw UserError("training-state file '" + path + "' is truncated (header)");
  return version == kStateVersion;
}
}  // namespace

TrainState read_state_file(const std::string& path, bool* verified) {
  const std::vector<char> buf = read_all(path, "training-state file");
  uint32_t stored = 0;
  uint64_t len = 0;
  const bool has_crc = check_state_header(path, buf.data(), buf.size(), &stored, &len);
  const uint32_t computed = has_crc ? crc_with_hole(0, buf.data(), buf.size(), 0, kStateCrcOffset) : 0;
  if (verified) *verified = has_crc;
  TrainState st;
  uint64_t n = 0;
  try {
    st.meta = nlohmann::json::parse(buf.begin() + 24, buf.begin() + 24 + static_cast<std::ptrdiff_t>(len));
    st.slot_names = st.meta.at("slots").get<std::vector<std::string>>();
    n = n_params_of(st.meta, path);
  } catch (const nlohmann::json::exception& e) {
    if (has_crc && computed != stored) checksum_mismatch("training-state file", path, stored, computed);
    throw UserError("training-state file '" + path + "' has a malformed header: " + e.what());
  }
  size_t pos = 24 + len;
  check_state_size(path, buf.size(), pos, st.slot_names.size(), n);
  if (has_crc && computed != stored) checksum_mismatch("training-state file", path, stored, computed);
  for (size_t s = 0; s < st.slot_names.size(); ++s, pos += n * 4) {
    std::vector<float> v(n);
    std::memcpy(v.data(), buf.data() + pos, n * 4);
    st.slots.push_back(std::move(v));
  }
  return st;
}

void verify_checkpoint_file(const std::string& path, bool* verified) {
  check_checkpoint_input(path, "checkpoint file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot open '" + path + "': " + errno_text());
  f.seekg(0, std::ios::end);
  const std::streamoff end = f.tellg();
  if (end < 0) throw UserError("cannot read checkpoint file '" + path + "': its size is unknown");
  const uint64_t size = static_cast<uint64_t>(end);
  f.seekg(0);
  std::vector<char> head(static_cast<size_t>(std::min<uint64_t>(size, 1024)));
  if (!f.read(head.data(), static_cast<std::streamsize>(head.size())))
    throw UserError("cannot read '" + path + "'");
  bool has_crc = false;
  uint32_t stored = 0;
  size_t hole = 0;
  if (size >= 8 && std::memcmp(head.data(), kStateMagic, 8) == 0) {
    uint64_t len = 0;
    has_crc = check_state_header(path, head.data(), static_cast<size_t>(size), &stored, &len);
    hole = kStateCrcOffset;
    std::string text(static_cast<size_t>(len), '\0');
    f.seekg(24);
    if (!f.read(text.data(), static_cast<std::streamsize>(len))) throw UserError("cannot read '" + path + "'");
    uint64_t slots = 0, n = 0;
    try {
      const nlohmann::json meta = nlohmann::json::parse(text);
      slots = meta.at("slots").size();
      n = n_params_of(meta, path);
    } catch (const nlohmann::json::exception& e) {
      throw UserError("training-state file '" + path + "' has a malformed header (damaged?): " + e.what());
    }
    check_state_size(path, size, 24 + len, slots, n);
  } else {
    if (size < 1024) throw UserError("model file '" + path + "' is too short for its 1024-byte header");
    int32_t h[256];
    std::memcpy(h, head.data(), sizeof h);
    has_crc = check_model_header(path, h);
    stored = static_cast<uint32_t>(h[11]);
    hole = kModelCrcOffset;
    ModelConfig m;
    if (!header_shape(h, m)) throw UserError("model file '" + path + "' has a damaged header (shape fields)");
    const uint64_t want = model_file_bytes(m, h[1]);
    if (size != want)
      throw UserError("model file '" + path + "' has " + std::to_string(size) + " bytes, expected " +
                      std::to_string(want) + " for the shape in its header (truncated?)");
  }
  if (verified) *verified = has_crc;
  if (!has_crc) return;
  f.clear();
  f.seekg(0);
  std::vector<char> chunk(8u << 20);
  uint32_t crc = 0;
  uint64_t base = 0;
  while (base < size) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - base));
    if (!f.read(chunk.data(), static_cast<std::streamsize>(n))) throw UserError("cannot read '" + path + "'");
    crc = crc_with_hole(crc, chunk.data(), n, static_cast<size_t>(base), hole);
    base += n;
  }
  const bool state = hole == kStateCrcOffset;
  if (crc != stored) checksum_mismatch(state ? "training-state file" : "model file", path, stored, crc);
}

}  // namespace sgpt
