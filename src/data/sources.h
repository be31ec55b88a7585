// Reading documents out of prepare's inputs.
//
// Input kinds, chosen by name (after removing one ".xz", which means xz-compressed):
//   NAME.txt     one document: the whole file
//   NAME.jsonl   one document per line: a JSON object whose field `text_field` (default "text")
//                is a string; blank lines are skipped
//   NAME.tar     a tar archive; each regular entry is read as an input of its own kind (so
//                archives of .txt, of .jsonl and of .xz files work, nested to any depth)
//   other        read as a tar archive if it is one (checked by content, so OpenWebText's
//                urlsf_subset00-1_data.xz members work), else an error for a named input and
//                skipped (and counted) inside a directory or an archive
//   a directory  every file under it, recursively, in sorted path order, by the rules above;
//                hidden files and folders (names starting with '.', e.g. .git) are skipped
// OpenWebText as distributed (openwebtext.tar.xz: a tar of xz-compressed tars of .txt documents)
// is therefore read as it is, one document per .txt. Documents come out in a fixed order (input
// order, sorted directories, archive order), so a prepare run is reproducible.
//
// Text is repaired to valid UTF-8 (each maximal ill-formed subpart becomes U+FFFD, tokenizer/utf8.h)
// and the replacements are counted. A .txt document whose NUL bytes and ill-formed sequences
// together pass 1% of its bytes (at least 8) is refused as not text, naming it, unless allow_binary. Errors (unreadable file, corrupt xz or tar, bad JSON line) are
// UserErrors naming the input, e.g. "corpus.tar.xz > part3.xz: corrupt xz data".
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sgpt {

struct Document {
  std::string text;    // valid UTF-8 (repaired)
  std::string origin;  // where it came from, for messages
};

struct InputStats {
  std::string input;          // as given
  uint64_t documents = 0;     // non-empty documents
  uint64_t empty_documents = 0;
  uint64_t bytes = 0;         // text bytes, after decompression and repair
  uint64_t files = 0;         // files and archive members read
  uint64_t skipped = 0;       // files and members of an unsupported kind, skipped
};

class DocumentReader {
 public:
  // allow_binary: read .txt files that do not look like text (NUL bytes and ill-formed UTF-8 over
  // 1% of the bytes) instead of refusing them.
  explicit DocumentReader(std::vector<std::string> inputs, std::string text_field = "text", bool allow_binary = false);
  // Checks that every input exists and is readable; throws UserError naming the first that isn't.
  void check_inputs() const;
  // Calls sink for every non-empty document of every input, in order. Throws UserError on a bad
  // input, and when an input holds no document at all.
  void for_each(const std::function<void(Document&&)>& sink);

  const std::vector<InputStats>& stats() const { return stats_; }
  uint64_t utf8_replacements() const { return replaced_; }

 private:
  std::vector<std::string> inputs_;
  std::string text_field_;
  bool allow_binary_ = false;
  std::vector<InputStats> stats_;
  uint64_t replaced_ = 0;
};

bool libarchive_available();

}  // namespace sgpt
