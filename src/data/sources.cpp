// Document readers for prepare: plain, xz, tar (libarchive), directories (see sources.h).
#include "data/sources.h"

#include <lzma.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#if defined(SGPT_WITH_LIBARCHIVE)
#include <archive.h>
#include <archive_entry.h>
#endif

#include "common/error.h"
#include "tokenizer/utf8.h"

namespace sgpt {
namespace fs = std::filesystem;

bool libarchive_available() {
#if defined(SGPT_WITH_LIBARCHIVE)
  return true;
#else
  return false;
#endif
}

namespace {

constexpr size_t kChunk = 1 << 16;

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A stream of bytes; read() returns 0 at the end and throws UserError on failure.
class ByteSource {
 public:
  explicit ByteSource(std::string origin) : origin_(std::move(origin)) {}
  virtual ~ByteSource() = default;
  virtual size_t read(char* buf, size_t n) = 0;
  const std::string& origin() const { return origin_; }

 protected:
  std::string origin_;
};

class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::string& path) : ByteSource(path) {
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) throw UserError(path + ": cannot open: " + std::strerror(errno));
  }
  ~FileSource() override { std::fclose(f_); }
  size_t read(char* buf, size_t n) override {
    const size_t got = std::fread(buf, 1, n, f_);
    if (got < n && std::ferror(f_)) throw UserError(origin_ + ": read error: " + std::strerror(errno));
    return got;
  }

 private:
  std::FILE* f_;
};

// Bytes already read (a peeked prefix) followed by the rest of another source.
class PrefixSource : public ByteSource {
 public:
  PrefixSource(std::string prefix, ByteSource& rest)
      : ByteSource(rest.origin()), prefix_(std::move(prefix)), rest_(rest) {}
  size_t read(char* buf, size_t n) override {
    if (pos_ < prefix_.size()) {
      const size_t take = std::min(n, prefix_.size() - pos_);
      std::memcpy(buf, prefix_.data() + pos_, take);
      pos_ += take;
      return take;
    }
    return rest_.read(buf, n);
  }

 private:
  std::string prefix_;
  size_t pos_ = 0;
  ByteSource& rest_;
};

// xz decompression (liblzma, concatenated streams allowed, as xz(1) writes them).
class XzSource : public ByteSource {
 public:
  explicit XzSource(ByteSource& in) : ByteSource(in.origin()), in_(in), inbuf_(kChunk) {
    if (lzma_stream_decoder(&s_, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK)
      throw UserError(origin_ + ": cannot start the xz decoder");
  }
  ~XzSource() override { lzma_end(&s_); }
  size_t read(char* buf, size_t n) override {
    if (done_ || n == 0) return 0;
    s_.next_out = reinterpret_cast<uint8_t*>(buf);
    s_.avail_out = n;
    while (s_.avail_out > 0) {
      if (s_.avail_in == 0 && !in_eof_) {
        const size_t got = in_.read(reinterpret_cast<char*>(inbuf_.data()), inbuf_.size());
        in_eof_ = got == 0;
        s_.next_in = inbuf_.data();
        s_.avail_in = got;
      }
      const lzma_ret r = lzma_code(&s_, in_eof_ ? LZMA_FINISH : LZMA_RUN);
      if (r == LZMA_STREAM_END) {
        done_ = true;
        break;
      }
      if (r == LZMA_BUF_ERROR && s_.total_in < 12)  // 12 bytes: the xz stream header
        throw UserError(origin_ + ": not xz data (shorter than an xz header)");
      if (r != LZMA_OK) throw UserError(origin_ + ": " + describe(r));
    }
    return n - s_.avail_out;
  }

 private:
  static std::string describe(lzma_ret r) {
    switch (r) {
      case LZMA_FORMAT_ERROR: return "not xz data (bad header)";
      case LZMA_DATA_ERROR: return "corrupt xz data";
      case LZMA_BUF_ERROR: return "truncated xz data (the file ends inside a compressed stream)";
      case LZMA_MEM_ERROR: return "out of memory while decompressing xz";
      case LZMA_OPTIONS_ERROR: return "unsupported xz options";
      default: return "xz decoder error " + std::to_string(int(r));
    }
  }
  ByteSource& in_;
  lzma_stream s_ = LZMA_STREAM_INIT;
  std::vector<uint8_t> inbuf_;
  bool in_eof_ = false, done_ = false;
};

std::string read_all(ByteSource& src) {
  std::string out;
  size_t got;
  do {
    const size_t old = out.size();
    out.resize(old + kChunk);
    got = src.read(out.data() + old, kChunk);
    out.resize(old + got);
  } while (got > 0);
  return out;
}

std::string read_up_to(ByteSource& src, size_t n) {
  std::string out(n, '\0');
  size_t have = 0;
  while (have < n) {
    const size_t got = src.read(out.data() + have, n - have);
    if (got == 0) break;
    have += got;
  }
  out.resize(have);
  return out;
}

bool looks_like_tar(const std::string& head) {
  return head.size() >= 262 && head.compare(257, 5, "ustar") == 0;
}

// Kind of a name after removing ".xz".
enum class Kind { kText, kJsonl, kTar, kOther };
Kind kind_of(const std::string& base) {
  if (ends_with(base, ".txt")) return Kind::kText;
  if (ends_with(base, ".jsonl")) return Kind::kJsonl;
  if (ends_with(base, ".tar")) return Kind::kTar;
  return Kind::kOther;
}

class Walker {
 public:
  Walker(InputStats& stats, const std::string& field, uint64_t& replaced,
         const std::function<void(Document&&)>& sink, bool allow_binary)
      : stats_(stats), field_(field), replaced_(replaced), sink_(sink), allow_binary_(allow_binary) {}

  // `named`: the user named this file; an unknown kind is then an error rather than a skip.
  void process(ByteSource& src, const std::string& name, bool named) {
    std::string base = name;
    std::optional<XzSource> xz;
    ByteSource* s = &src;
    if (ends_with(base, ".xz")) {
      base.resize(base.size() - 3);
      xz.emplace(src);
      s = &*xz;
    }
    switch (kind_of(base)) {
      case Kind::kText: {
        ++stats_.files;
        std::string text = read_all(*s);
        if (!allow_binary_) check_text(text, s->origin());
        emit(std::move(text), s->origin());
        return;
      }
      case Kind::kJsonl:
        ++stats_.files;
        read_jsonl(*s);
        return;
      case Kind::kTar:
        read_tar(*s);
        return;
      case Kind::kOther: {
        std::string head = read_up_to(*s, 512);
        if (looks_like_tar(head)) {
          PrefixSource rest(std::move(head), *s);
          read_tar(rest);
        } else if (named) {
          throw UserError(s->origin() + ": unknown input type (expected .txt, .jsonl or .tar, "
                          "optionally .xz-compressed, a tar archive, or a directory)");
        } else {
          ++stats_.skipped;
        }
        return;
      }
    }
  }

  void emit(std::string text, const std::string& origin) {
    if (!utf8_valid(text)) text = utf8_repair(text, &replaced_);
    if (text.empty()) {
      ++stats_.empty_documents;
      return;
    }
    ++stats_.documents;
    stats_.bytes += text.size();
    sink_(Document{std::move(text), origin});
  }

 private:
  void read_jsonl(ByteSource& src) {
    std::string buf, line;
    std::vector<char> chunk(kChunk);
    uint64_t lineno = 0;
    size_t start = 0;
    bool eof = false;
    while (true) {
      const size_t nl = buf.find('\n', start);
      if (nl == std::string::npos && !eof) {
        buf.erase(0, start);
        start = 0;
        const size_t got = src.read(chunk.data(), chunk.size());
        if (got == 0) eof = true;
        buf.append(chunk.data(), got);
        continue;
      }
      if (nl == std::string::npos && start >= buf.size()) break;
      const size_t end = nl == std::string::npos ? buf.size() : nl;
      ++lineno;
      json_line(std::string_view(buf).substr(start, end - start), src.origin(), lineno);
      start = end + 1;
    }
  }

  void json_line(std::string_view line, const std::string& origin, uint64_t lineno) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // blank
    std::string fixed;
    if (!utf8_valid(line)) {
      fixed = utf8_repair(line, &replaced_);
      line = fixed;
    }
    const std::string where = origin + ":" + std::to_string(lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw UserError(where + ": not a valid JSON line (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains(field_) || !j[field_].is_string())
      throw UserError(where + ": no string field '" + field_ + "' (choose the field with --text-field)");
    emit(j[field_].get<std::string>(), where);
  }

  void read_tar(ByteSource& src);

  // A .txt document that is not text: NUL bytes and ill-formed UTF-8 sequences together more
  // than 1% of its bytes (and at least 8 of them). A few stray bytes in real text (a Latin-1
  // character) stay below this and are repaired as before.
  static void check_text(std::string_view text, const std::string& origin) {
    const uint64_t nul = static_cast<uint64_t>(std::count(text.begin(), text.end(), '\0'));
    uint64_t ill = 0;
    if (!utf8_valid(text)) utf8_repair(text, &ill);  // counts the replacements emit() will make
    const uint64_t bad = nul + ill;
    if (bad < 8 || bad * 100 <= text.size()) return;
    throw UserError(origin + ": does not look like text (" + std::to_string(nul) + " NUL bytes and " +
                    std::to_string(ill) + " ill-formed UTF-8 sequences in " + std::to_string(text.size()) +
                    " bytes): a binary file? pass --allow-binary to tokenize it anyway (each ill-formed "
                    "sequence becomes U+FFFD)");
  }

  InputStats& stats_;
  const std::string& field_;
  uint64_t& replaced_;
  const std::function<void(Document&&)>& sink_;
  bool allow_binary_;
};

#if defined(SGPT_WITH_LIBARCHIVE)
// libarchive reading from a ByteSource; an exception thrown by the source is kept and rethrown.
struct ArchiveFeed {
  explicit ArchiveFeed(ByteSource* s) : src(s), buf(kChunk) {}
  ByteSource* src;
  std::vector<char> buf;
  std::exception_ptr error;
  static la_ssize_t read(struct archive*, void* self, const void** out) {
    auto* f = static_cast<ArchiveFeed*>(self);
    try {
      *out = f->buf.data();
      return la_ssize_t(f->src->read(f->buf.data(), f->buf.size()));
    } catch (...) {
      f->error = std::current_exception();
      return -1;
    }
  }
  [[noreturn]] void fail(struct archive* a, const std::string& origin) {
    if (error) std::rethrow_exception(error);
    const char* why = archive_error_string(a);
    throw UserError(origin + ": corrupt tar archive (" + (why ? why : "unknown error") + ")");
  }
};

class ArchiveEntrySource : public ByteSource {
 public:
  ArchiveEntrySource(struct archive* a, ArchiveFeed& feed, std::string origin)
      : ByteSource(std::move(origin)), a_(a), feed_(feed), outer_(feed.src->origin()) {}
  size_t read(char* buf, size_t n) override {
    const la_ssize_t got = archive_read_data(a_, buf, n);
    if (got < 0) feed_.fail(a_, outer_);
    return size_t(got);
  }

 private:
  struct archive* a_;
  ArchiveFeed& feed_;
  std::string outer_;
};

void Walker::read_tar(ByteSource& src) {
  std::unique_ptr<struct archive, decltype(&archive_read_free)> a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  ArchiveFeed feed(&src);
  if (archive_read_open(a.get(), &feed, nullptr, &ArchiveFeed::read, nullptr) != ARCHIVE_OK)
    feed.fail(a.get(), src.origin());
  struct archive_entry* entry;
  while (true) {
    const int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) feed.fail(a.get(), src.origin());
    if (archive_entry_filetype(entry) != AE_IFREG) continue;
    const char* path = archive_entry_pathname(entry);
    const std::string name = path ? path : "";
    ArchiveEntrySource member(a.get(), feed, src.origin() + " > " + name);
    process(member, name, false);
  }
}
#else
void Walker::read_tar(ByteSource& src) {
  throw UserError(src.origin() + ": tar archives need libarchive, and this build has none "
                  "(install libarchive-dev and rebuild)");
}
#endif

// Files under a directory that prepare reads, sorted; *skipped counts the others.
std::vector<std::string> list_directory(const std::string& dir, uint64_t* skipped) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) throw UserError(dir + ": cannot list directory: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw UserError(dir + ": cannot list directory: " + ec.message());
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {  // hidden files and folders: .git, markers, editor droppings
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    const std::string p = it->path().string();
    std::string base = ends_with(name, ".xz") ? name.substr(0, name.size() - 3) : name;
    if (kind_of(base) != Kind::kOther || ends_with(name, ".xz")) files.push_back(p);
    else ++*skipped;
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

DocumentReader::DocumentReader(std::vector<std::string> inputs, std::string text_field, bool allow_binary)
    : inputs_(std::move(inputs)), text_field_(std::move(text_field)), allow_binary_(allow_binary) {}

void DocumentReader::check_inputs() const {
  if (inputs_.empty()) throw UserError("no inputs given (--input PATH...)");
  for (const std::string& in : inputs_) {
    std::error_code ec;
    if (!fs::exists(in, ec)) throw UserError(in + ": input not found");
    if (::access(in.c_str(), R_OK) != 0) throw UserError(in + ": cannot read: " + std::strerror(errno));
  }
}

void DocumentReader::for_each(const std::function<void(Document&&)>& sink) {
  check_inputs();
  stats_.clear();
  for (const std::string& in : inputs_) {
    stats_.push_back(InputStats{in});
    InputStats& st = stats_.back();
    Walker walker(st, text_field_, replaced_, sink, allow_binary_);
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      for (const std::string& f : list_directory(in, &st.skipped)) {
        FileSource src(f);
        walker.process(src, f, false);
      }
    } else {
      FileSource src(in);
      walker.process(src, in, true);
    }
    if (st.documents == 0) {
      std::string why = in + ": holds no documents";
      if (st.empty_documents) why += " (" + std::to_string(st.empty_documents) + " empty)";
      if (st.skipped) why += " (" + std::to_string(st.skipped) + " file(s) of unsupported kinds skipped)";
      throw UserError(why);
    }
  }
}

}  // namespace sgpt
