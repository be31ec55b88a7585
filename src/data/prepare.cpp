// prepare: read documents, tokenize them on all cores, write token files atomically (prepare.h).
#include "data/prepare.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/paths.h"
#include "common/philox.h"
#include "data/sources.h"
#include "tokenizer/tokenizer.h"

namespace sgpt {
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kValSplitTweak = 0xFFFFFFFD;

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_prepared_name(const std::string& name) {
  if (name == "train.bin" || name == "val.bin" || name == "manifest.json") return true;
  for (std::string_view split : {"train_", "val_"}) {
    if (name.size() > split.size() + 4 && name.compare(0, split.size(), split) == 0 &&
        name.compare(name.size() - 4, 4, ".bin") == 0 &&
        is_digits(std::string_view(name).substr(split.size(), name.size() - split.size() - 4)))
      return true;
  }
  return false;
}

std::string fmt(const char* f, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

// Temporary files of this run; removed unless commit() renamed them.
class TempFiles {
 public:
  explicit TempFiles(std::string dir) : dir_(std::move(dir)), tag_(".tmp-" + std::to_string(::getpid()) + "-") {}
  ~TempFiles() {
    if (committed_) return;
    for (const auto& [tmp, final_name] : files_) std::remove(tmp.c_str());
  }
  std::string add(const std::string& final_name) {
    std::string tmp = (fs::path(dir_) / (tag_ + final_name)).string();
    files_.emplace_back(tmp, final_name);
    return tmp;
  }
  void commit() {
    for (const auto& [tmp, final_name] : files_) {
      const std::string dst = (fs::path(dir_) / final_name).string();
      if (std::rename(tmp.c_str(), dst.c_str()) != 0)
        throw UserError(dst + ": cannot move the finished file into place: " + std::strerror(errno));
    }
    committed_ = true;
  }
  std::vector<std::string> final_names() const {
    std::vector<std::string> v;
    for (const auto& f : files_) v.push_back(f.second);
    return v;
  }

 private:
  std::string dir_, tag_;
  std::vector<std::pair<std::string, std::string>> files_;
  bool committed_ = false;
};

// The token files of one split ("train" or "val").
class SplitWriter {
 public:
  SplitWriter(std::string split, const PrepareOptions& opt, TempFiles& temps)
      : split_(std::move(split)), opt_(opt), temps_(temps) {}

  void append(const std::vector<uint16_t>& toks) {
    size_t pos = 0;
    while (pos < toks.size()) {
      if (!cur_ || (opt_.format == TokenFormat::kLlmc && cur_->num_tokens() >= opt_.shard_tokens)) open_next();
      size_t take = toks.size() - pos;
      if (opt_.format == TokenFormat::kLlmc) take = std::min<uint64_t>(take, opt_.shard_tokens - cur_->num_tokens());
      cur_->append(toks.data() + pos, take);
      pos += take;
      tokens_ += take;
    }
  }
  void finish() { close_current(); }
  uint64_t tokens() const { return tokens_; }
  const std::vector<std::pair<std::string, uint64_t>>& files() const { return files_; }

 private:
  void open_next() {
    close_current();
    char name[64];
    if (opt_.format == TokenFormat::kLlmc) std::snprintf(name, sizeof name, "%s_%06zu.bin", split_.c_str(), files_.size());
    else std::snprintf(name, sizeof name, "%s.bin", split_.c_str());
    cur_name_ = name;
    cur_ = std::make_unique<TokenFileWriter>(temps_.add(cur_name_), opt_.format);
  }
  void close_current() {
    if (!cur_) return;
    cur_->finish();
    files_.emplace_back(cur_name_, cur_->num_tokens());
    cur_.reset();
  }
  std::string split_;
  const PrepareOptions& opt_;
  TempFiles& temps_;
  std::unique_ptr<TokenFileWriter> cur_;
  std::string cur_name_;
  std::vector<std::pair<std::string, uint64_t>> files_;
  uint64_t tokens_ = 0;
};

// Bounded hand-off of document batches from the reader thread to the tokenizing thread.
class BatchQueue {
 public:
  struct Cancelled {};
  void push(std::vector<Document>&& batch) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return q_.size() < 2 || cancelled_; });
    if (cancelled_) throw Cancelled{};
    q_.push_back(std::move(batch));
    cv_.notify_all();
  }
  // False when the reader is done and the queue is drained.
  bool pop(std::vector<Document>& out) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !q_.empty() || done_; });
    if (q_.empty()) {
      if (error_) std::rethrow_exception(error_);
      return false;
    }
    out = std::move(q_.front());
    q_.pop_front();
    cv_.notify_all();
    return true;
  }
  void finish(std::exception_ptr error) {
    std::lock_guard lock(mu_);
    done_ = true;
    error_ = error;
    cv_.notify_all();
  }
  void cancel() {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<Document>> q_;
  bool done_ = false, cancelled_ = false;
  std::exception_ptr error_;
};

// Tokenizes every document of a batch ([EOT] + tokens each), on `threads` threads.
std::vector<std::vector<uint16_t>> tokenize_batch(const std::vector<Document>& docs,
                                                  const Tokenizer& tok, int threads) {
  std::vector<std::vector<uint16_t>> out(docs.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto work = [&] {
    std::vector<int> ids;
    try {
      for (size_t i; (i = next.fetch_add(1)) < docs.size();) {
        ids.clear();
        ids.push_back(tok.eot());
        tok.encode_append(docs[i].text, ids);
        out[i].assign(ids.begin(), ids.end());
      }
    } catch (...) {
      std::lock_guard lock(error_mu);
      if (!error) error = std::current_exception();
      next = docs.size();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads && size_t(t) < docs.size(); ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  return out;
}

// Removes ".tmp-<pid>-*" files left by prepare runs whose process no longer exists (killed runs).
void remove_stale_temps(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-", 0) != 0) continue;
    const size_t dash = name.find('-', 5);
    if (dash == std::string::npos || !is_digits(std::string_view(name).substr(5, dash - 5))) continue;
    const long pid = std::stol(name.substr(5, dash - 5));
    if (::kill(pid_t(pid), 0) != 0 && errno == ESRCH) fs::remove(e.path(), ec);
  }
}

}  // namespace

std::vector<std::string> existing_prepared_files(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_prepared_name(e.path().filename().string())) found.push_back(e.path().filename().string());
  std::sort(found.begin(), found.end());
  return found;
}

namespace {
void check_prepare_options(const PrepareOptions& opt) {
  if (opt.output_dir.empty()) throw UserError("prepare: --output-dir is required");
  if (!(opt.val_fraction >= 0.0 && opt.val_fraction < 1.0))
    throw UserError("prepare: --val-fraction must be in [0, 1), got " + std::to_string(opt.val_fraction));
  if (opt.format == TokenFormat::kLlmc && (opt.shard_tokens < 1 || opt.shard_tokens > uint64_t(INT32_MAX)))
    throw UserError("prepare: --shard-tokens must be in [1, 2^31-1], got " + std::to_string(opt.shard_tokens));
  if (opt.text_field.empty()) throw UserError("prepare: --text-field must not be empty");
  if (opt.threads < 0) throw UserError("prepare: --threads must be >= 0 (0: every core)");
}

// The prepared files already in the output folder, which this run will replace. Only regular
// files are ever replaced: a link under a shard's name (whose target lies elsewhere), a folder, a
// device or a pipe is left alone and the run refused; so is any old output without --overwrite.
std::vector<std::string> replaceable_outputs(const PrepareOptions& opt) {
  std::error_code ec;
  const std::vector<std::string> old = existing_prepared_files(opt.output_dir);
  for (const std::string& name : old) {
    const fs::path p = fs::path(opt.output_dir) / name;
    const fs::file_status st = fs::symlink_status(p, ec);
    if (fs::is_regular_file(st)) continue;
    throw UserError(p.string() + ": " +
                    (fs::is_symlink(st)     ? "a symbolic link"
                     : fs::is_directory(st) ? "a folder"
                                            : "not a regular file (a device, a pipe or a socket)") +
                    " under a name prepare writes: it is never replaced; remove it or choose another --output-dir");
  }
  if (!old.empty() && !opt.overwrite) {
    std::string list;
    for (size_t i = 0; i < old.size() && i < 3; ++i) list += (i ? ", " : "") + old[i];
    if (old.size() > 3) list += ", ...";
    throw UserError(opt.output_dir + ": already holds prepared data (" + list +
                    "); pass --overwrite to replace it, or choose another --output-dir");
  }
  return old;
}

nlohmann::json make_manifest(const PrepareOptions& opt, const Tokenizer& tok, const DocumentReader& reader,
                             const SplitWriter& train, const SplitWriter& val, uint64_t train_docs,
                             uint64_t val_docs) {
  nlohmann::json inputs = nlohmann::json::array();
  for (const InputStats& s : reader.stats())
    inputs.push_back({{"path", s.input}, {"documents", s.documents}, {"empty_documents", s.empty_documents},
                      {"bytes", s.bytes}, {"files", s.files}, {"skipped", s.skipped}});
  nlohmann::json shards = nlohmann::json::array();
  for (const SplitWriter* w : {&val, &train})
    for (const auto& [name, n] : w->files())
      shards.push_back({{"file", name}, {"split", w == &val ? "val" : "train"}, {"tokens", n}});
  nlohmann::json manifest = {
      {"created_by", "sophiagpt prepare"},
      {"format", token_format_name(opt.format)},
      {"inputs", inputs},
      {"text_field", opt.text_field},
      {"seed", opt.seed},
      {"val_fraction", opt.val_fraction},
      {"documents", {{"train", train_docs}, {"val", val_docs}}},
      {"tokens", {{"train", train.tokens()}, {"val", val.tokens()}}},
      {"invalid_utf8_replacements", reader.utf8_replacements()},
      {"tokenizer",
       {{"name", "gpt2"}, {"encoder_json_sha256", tok.encoder_sha256()},
        {"vocab_bpe_sha256", tok.vocab_sha256()}, {"vocab_size", tok.vocab_size()}, {"eot", tok.eot()}}},
      {"shards", shards}};
  if (opt.format == TokenFormat::kLlmc) manifest["shard_tokens"] = opt.shard_tokens;
  return manifest;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw UserError(path + ": cannot create: " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) throw UserError(path + ": write error");
}

}  // namespace

nlohmann::json run_prepare(const PrepareOptions& opt, const Tokenizer& tok) {
  // ---- options and output directory ----
  check_prepare_options(opt);
  DocumentReader reader(opt.inputs, opt.text_field, opt.allow_binary);
  reader.check_inputs();
  std::error_code ec;
  if (fs::exists(opt.output_dir, ec) && !fs::is_directory(opt.output_dir, ec))
    throw UserError(opt.output_dir + ": output path exists and is not a directory");
  const bool existed = fs::exists(opt.output_dir, ec);
  fs::create_directories(opt.output_dir, ec);
  if (ec) throw UserError(opt.output_dir + ": cannot create the output directory: " + ec.message());
  // The folder is locked for the whole run (a second prepare into it is refused, naming this
  // process); at the end the lock file is removed again and, on failure, a directory this run
  // created is removed when nothing else is in it.
  struct Output {
    const std::string& dir;
    bool remove_if_empty;
    DirLock lock;
    ~Output() {
      lock.release_and_remove();
      std::error_code e;
      if (remove_if_empty && fs::is_empty(dir, e)) fs::remove(dir, e);
    }
  } output{opt.output_dir, !existed, {}};
  output.lock = DirLock(opt.output_dir, "prepare");
  const std::vector<std::string> old = replaceable_outputs(opt);
  remove_stale_temps(opt.output_dir);
  const int threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));

  // ---- reader thread: documents in batches of about 4 MB per tokenizing thread ----
  BatchQueue queue;
  std::thread reader_thread([&] {
    std::exception_ptr error;
    try {
      const size_t target = (size_t(4) << 20) * size_t(threads);
      std::vector<Document> batch;
      size_t bytes = 0;
      reader.for_each([&](Document&& d) {
        bytes += d.text.size();
        batch.push_back(std::move(d));
        if (bytes >= target || batch.size() >= 65536) {
          queue.push(std::move(batch));
          batch.clear();
          bytes = 0;
        }
      });
      if (!batch.empty()) queue.push(std::move(batch));
    } catch (const BatchQueue::Cancelled&) {
    } catch (...) {
      error = std::current_exception();
    }
    queue.finish(error);
  });

  // ---- tokenize and write, in document order ----
  TempFiles temps(opt.output_dir);
  SplitWriter train("train", opt, temps), val("val", opt, temps);
  uint64_t doc_index = 0, train_docs = 0, val_docs = 0, text_bytes = 0;
  // The newest document is held back until the next one arrives, so that it can become the
  // validation split when the seeded choice picked no document at all (small corpora).
  std::vector<uint16_t> pending;
  bool pending_val = false, have_pending = false;
  auto flush_pending = [&](bool to_val) {
    (to_val ? val : train).append(pending);
    ++(to_val ? val_docs : train_docs);
    have_pending = false;
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto last_report = t0;
  try {
    std::vector<Document> batch;
    while (queue.pop(batch)) {
      auto tokens = tokenize_batch(batch, tok, threads);
      for (size_t i = 0; i < batch.size(); ++i, ++doc_index) {
        if (have_pending) flush_pending(pending_val);
        const Philox4 r = philox(opt.seed, uint32_t(doc_index), uint32_t(doc_index >> 32), kValSplitTweak, kDataSampler);
        pending_val = uniform01_double(r.v[0], r.v[1]) < opt.val_fraction;
        pending = std::move(tokens[i]);
        have_pending = true;
        text_bytes += batch[i].text.size();
      }
      const auto now = std::chrono::steady_clock::now();
      if (opt.progress && now - last_report > std::chrono::seconds(5)) {
        last_report = now;
        const double s = std::chrono::duration<double>(now - t0).count();
        opt.progress(fmt("%.0f documents, %.1f MB of text, %.2fM tokens, %.2f MB/s", double(doc_index),
                         text_bytes / 1e6, (train.tokens() + val.tokens()) / 1e6, text_bytes / 1e6 / s));
      }
    }
    if (have_pending) {
      if (opt.val_fraction > 0 && val_docs == 0 && !pending_val && doc_index == 1)
        throw UserError("prepare: a single document cannot be split into training and validation data; "
                        "pass --val-fraction 0, or give more documents");
      flush_pending(pending_val || (opt.val_fraction > 0 && val_docs == 0));
    }
    train.finish();
    val.finish();
  } catch (...) {
    queue.cancel();
    reader_thread.join();
    throw;  // temps' destructor removes the partial files
  }
  reader_thread.join();

  if (train.tokens() == 0)
    throw UserError("prepare: every one of the " + std::to_string(doc_index) +
                    " documents went to the validation split; lower --val-fraction");

  // ---- manifest ----
  const nlohmann::json manifest = make_manifest(opt, tok, reader, train, val, train_docs, val_docs);
  write_text_file(temps.add("manifest.json"), manifest.dump(2) + "\n");

  // ---- commit: drop old files the new run does not replace, then rename everything ----
  const std::vector<std::string> now = temps.final_names();
  fs::remove(fs::path(opt.output_dir) / "manifest.json", ec);  // old output is incomplete from here on
  for (const std::string& name : old)
    if (std::find(now.begin(), now.end(), name) == now.end())
      fs::remove(fs::path(opt.output_dir) / name, ec);
  // The manifest was added last, so it is renamed last: its presence marks a complete output.
  temps.commit();
  output.remove_if_empty = false;
  return manifest;
}

}  // namespace sgpt
