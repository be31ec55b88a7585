// DataLoader: the global sequence stream, its shuffling and per-rank slicing (see loader.h).
#include "data/loader.h"

#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <map>

#include "common/error.h"
#include "common/philox.h"
#include "data/permutation.h"

namespace sgpt {
namespace {
constexpr uint32_t kFileOrderTweak = 0x1FFFFFFF;
constexpr uint32_t kGlobalOrderTweak = 0x1FFFFFFE;
constexpr uint32_t kWindowTweak = 0xFFFFFFFE;
constexpr size_t kMaxOpenFiles = 64;  // descriptors kept open per loader
}  // namespace

const char* loader_order_name(LoaderOrder o) { return o == LoaderOrder::kGlobal ? "global" : "shards"; }

LoaderOrder parse_loader_order(const std::string& s) {
  if (s == "shards") return LoaderOrder::kShards;
  if (s == "global") return LoaderOrder::kGlobal;
  throw UserError("data order '" + s + "' is not one of \"shards\", \"global\"");
}

DataLoader::DataLoader(const LoaderOptions& opt) : opt_(opt) {
  if (opt_.B < 1 || opt_.T < 1)
    throw UserError("data loader: B and T must be positive (B=" + std::to_string(opt_.B) +
                    ", T=" + std::to_string(opt_.T) + ")");
  if (opt_.world < 1 || opt_.rank < 0 || opt_.rank >= opt_.world)
    throw UserError("data loader: rank " + std::to_string(opt_.rank) + " is not in [0, world=" +
                    std::to_string(opt_.world) + ")");
  if (opt_.vocab_size < 1 || opt_.vocab_size > 65536)
    throw UserError("data loader: vocab_size " + std::to_string(opt_.vocab_size) +
                    " does not fit uint16 tokens");
  paths_ = expand_token_pattern(opt_.pattern);
  if (paths_.size() >= (size_t(1) << 29))
    throw UserError(opt_.pattern + ": too many files (" + std::to_string(paths_.size()) + ")");
  const uint64_t need = uint64_t(opt_.T) + 1;
  uint64_t largest = 0;
  for (const std::string& p : paths_) {
    files_.emplace_back(p, opt_.format);
    files_.back().check_vocab(opt_.vocab_size);  // every token, now rather than when a batch reaches it
    files_.back().close();  // reopened on first read (see next())
    const uint64_t n = files_.back().num_tokens();
    tokens_ += n;
    largest = std::max(largest, n);
    uint64_t c = 0;
    if (n >= need) c = opt_.format == TokenFormat::kLlmc ? (n - 1) / uint64_t(opt_.T) : n - uint64_t(opt_.T);
    count_.push_back(c);
    index_prefix_.push_back(epoch_seqs_);
    epoch_seqs_ += c;
  }
  if (epoch_seqs_ == 0)
    throw UserError(opt_.pattern + ": no file holds a sequence of T+1 = " + std::to_string(need) +
                    " tokens (the largest of " + std::to_string(paths_.size()) + " file(s) has " +
                    std::to_string(largest) + ")");
  buf_.resize(need);
}

uint64_t DataLoader::num_tokens() const { return tokens_; }

void DataLoader::reset() { batch_ = 0; }

void DataLoader::prepare_epoch(uint64_t epoch) {
  if (epoch == epoch_) return;
  epoch_ = epoch;
  const size_t n = files_.size();
  order_.resize(n);
  if (opt_.shuffle) {
    const FeistelPermutation perm(n, opt_.seed, uint32_t(epoch), kFileOrderTweak);
    for (size_t i = 0; i < n; ++i) order_[i] = uint32_t(perm(i));
  } else {
    for (size_t i = 0; i < n; ++i) order_[i] = uint32_t(i);
  }
  prefix_.assign(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix_[i + 1] = prefix_[i] + count_[order_[i]];
}

std::pair<size_t, uint64_t> DataLoader::locate(uint64_t s) {
  if (opt_.format == TokenFormat::kNanoGpt) {
    const Philox4 r = philox(opt_.seed, uint32_t(s), uint32_t(s >> 32), kWindowTweak, kDataSampler);
    const uint64_t u = (uint64_t(r.v[0]) << 32) | r.v[1];
    uint64_t w = uint64_t((unsigned __int128)u * epoch_seqs_ >> 64);
    for (size_t k = 0; k < files_.size(); ++k) {
      if (w < count_[k]) return {k, w};
      w -= count_[k];
    }
    return {files_.size() - 1, 0};  // unreachable: w < epoch_seqs_
  }
  const uint64_t epoch = s / epoch_seqs_, i = s % epoch_seqs_;
  if (opt_.shuffle && opt_.order == LoaderOrder::kGlobal) {
    const uint64_t g = FeistelPermutation(epoch_seqs_, opt_.seed, uint32_t(epoch), kGlobalOrderTweak)(i);
    // The file whose range [index_prefix_[k], index_prefix_[k] + count_[k]) holds g: the last k
    // with index_prefix_[k] <= g (a file too short for a sequence shares its prefix with the next
    // file, so it is never the last one; epoch_seqs_ > 0 puts g below some file's end).
    const size_t k =
        size_t(std::upper_bound(index_prefix_.begin(), index_prefix_.end(), g) - index_prefix_.begin()) - 1;
    return {k, (g - index_prefix_[k]) * uint64_t(opt_.T)};
  }
  prepare_epoch(epoch);
  // The position in order_ whose range [prefix_[pos], prefix_[pos+1]) holds i.
  const size_t pos = size_t(std::upper_bound(prefix_.begin(), prefix_.end(), i) - prefix_.begin()) - 1;
  const uint32_t k = order_[pos];
  uint64_t j = i - prefix_[pos];
  if (opt_.shuffle) j = FeistelPermutation(count_[k], opt_.seed, uint32_t(epoch), k)(j);
  return {k, j * uint64_t(opt_.T)};
}

void DataLoader::next(int* inp, int* tgt) {
  const uint64_t B = uint64_t(opt_.B), T = uint64_t(opt_.T);
  const uint64_t base = batch_ * uint64_t(opt_.world) * B + uint64_t(opt_.rank) * B;
  for (uint64_t b = 0; b < B; ++b) {
    const auto [k, start] = locate(base + b);
    if (!files_[k].is_open()) {
      if (open_.size() >= kMaxOpenFiles) {
        files_[open_.front()].close();
        open_.erase(open_.begin());
      }
      open_.push_back(k);
    }
    files_[k].read(start, T + 1, buf_.data(), opt_.vocab_size);
    std::copy(buf_.begin(), buf_.begin() + long(T), inp + b * T);
    std::copy(buf_.begin() + 1, buf_.end(), tgt + b * T);
  }
  ++batch_;
}

nlohmann::json DataLoader::state() const {
  return {{"format", token_format_name(opt_.format)},
          {"batch", batch_},
          {"sequences_per_batch", uint64_t(opt_.world) * uint64_t(opt_.B)},
          {"T", opt_.T},
          {"seed", opt_.seed},
          {"shuffle", opt_.shuffle},
          {"order", loader_order_name(opt_.order)},
          {"files", files_.size()},
          {"num_tokens", tokens_}};
}

void DataLoader::restore(const nlohmann::json& st) {
  auto bad = [&](const std::string& why) {
    return UserError("data loader state does not fit '" + opt_.pattern + "': " + why);
  };
  if (!st.is_object()) throw bad("not a JSON object");
  auto get_u64 = [&](const char* key) -> uint64_t {
    const bool ok = st.contains(key) && st[key].is_number_integer() &&
                    (st[key].is_number_unsigned() || st[key].get<int64_t>() >= 0);
    if (!ok) throw bad(std::string("missing or invalid '") + key + "'");
    return st[key].get<uint64_t>();
  };
  if (!st.contains("format") || !st["format"].is_string() || st["format"] != token_format_name(opt_.format))
    throw bad("format differs (state: " + (st.contains("format") ? st["format"].dump() : "none") + ")");
  if (get_u64("T") != uint64_t(opt_.T)) throw bad("sequence length T differs");
  if (get_u64("seed") != opt_.seed) throw bad("seed differs");
  if (!st.contains("shuffle") || !st["shuffle"].is_boolean() || st["shuffle"].get<bool>() != opt_.shuffle)
    throw bad("shuffle setting differs");
  // Checkpoints from before data.order existed were written with the shards order.
  const std::string order = st.contains("order") && st["order"].is_string() ? st["order"].get<std::string>() : "shards";
  if (st.contains("order") && !st["order"].is_string()) throw bad("invalid 'order'");
  if (order != loader_order_name(opt_.order))
    throw bad("data order differs (state: \"" + order + "\", config: \"" + loader_order_name(opt_.order) + "\")");
  if (get_u64("files") != files_.size()) throw bad("number of files differs");
  if (get_u64("num_tokens") != tokens_) throw bad("total token count differs");
  const uint64_t spb = get_u64("sequences_per_batch");
  const uint64_t seqs = get_u64("batch") * spb;
  const uint64_t mine = uint64_t(opt_.world) * uint64_t(opt_.B);
  if (seqs % mine != 0)
    throw bad(std::to_string(seqs) + " sequences consumed is not a whole number of global batches of " +
              std::to_string(mine));
  batch_ = seqs / mine;
}

void check_train_val_disjoint(const std::string& train_pattern, const std::string& val_pattern) {
  // Files are the same when they are one inode: another spelling of the path, a symbolic link or
  // a hard link to a training file all count.
  auto id_of = [](const std::string& path) -> std::pair<uint64_t, uint64_t> {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {~uint64_t(0), std::hash<std::string>{}(path)};
    return {uint64_t(st.st_dev), uint64_t(st.st_ino)};
  };
  std::map<std::pair<uint64_t, uint64_t>, std::string> train;
  for (const std::string& p : expand_token_pattern(train_pattern)) train.emplace(id_of(p), p);
  std::vector<std::string> shared;
  for (const std::string& p : expand_token_pattern(val_pattern)) {
    const auto it = train.find(id_of(p));
    if (it == train.end()) continue;
    shared.push_back(it->second == p ? "'" + p + "'" : "'" + p + "' (= '" + it->second + "')");
  }
  if (shared.empty()) return;
  std::string list;
  for (size_t i = 0; i < shared.size() && i < 3; ++i) list += (i ? ", " : "") + shared[i];
  if (shared.size() > 3) list += ", and " + std::to_string(shared.size() - 3) + " more";
  throw UserError("config keys 'data.train' ('" + train_pattern + "') and 'data.val' ('" + val_pattern + "') share " +
                  std::to_string(shared.size()) + " file(s): " + list +
                  "; the validation loss would be measured on training data. Give data.val files of their own "
                  "(prepare writes val_*.bin beside train_*.bin)");
}

}  // namespace sgpt
