#include "eval/hellaswag.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/paths.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace sgpt {
namespace {

using nlohmann::json;

std::string where(const std::string& path, int64_t line) {
  return "HellaSwag file '" + path + "', line " + std::to_string(line);
}

// Candidate c of e as one row of at most T tokens: the last context tokens that fit, then the
// whole ending. Returns the number of context tokens kept; throws UserError when the ending does
// not fit with one context token or an id is outside [0, V).
int build_row(const HellaSwagExample& e, int c, int T, int V, const std::string& path, std::vector<int>& row) {
  const std::vector<int>& ending = e.endings[c];
  const int end_len = static_cast<int>(ending.size());
  if (end_len < 1 || end_len >= T)
    throw UserError(where(path, e.line) + ": ending " + std::to_string(c) + " has " + std::to_string(end_len) +
                    " tokens; with the model's block_size " + std::to_string(T) +
                    " it must have between 1 and block_size - 1");
  const int ctx_len = std::min(static_cast<int>(e.ctx.size()), T - end_len);
  row.assign(e.ctx.end() - ctx_len, e.ctx.end());
  row.insert(row.end(), ending.begin(), ending.end());
  for (int id : row)
    if (id < 0 || id >= V)
      throw UserError(where(path, e.line) + ": token " + std::to_string(id) +
                      " is outside the model's vocabulary (vocab_size " + std::to_string(V) +
                      "); HellaSwag needs a model with the GPT-2 vocabulary");
  return ctx_len;
}

}  // namespace

std::vector<HellaSwagText> read_hellaswag(const std::string& path, int64_t limit) {
  check_input_file(path, "HellaSwag file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot read HellaSwag file '" + path + "': " + std::strerror(errno));
  std::vector<HellaSwagText> out;
  std::string line;
  int64_t n = 0;
  while ((limit <= 0 || static_cast<int64_t>(out.size()) < limit) && std::getline(f, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto bad = [&](const std::string& what) -> UserError { return UserError(where(path, n) + ": " + what); };
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw bad("not valid JSON (expected one JSON object per line)");
    if (!j.is_object()) throw bad("expected a JSON object with \"ctx\", \"endings\" and \"label\"");
    HellaSwagText ex;
    ex.line = n;
    const auto ctx = j.find("ctx");
    if (ctx == j.end() || !ctx->is_string()) throw bad("missing \"ctx\" (the context, a string)");
    ex.ctx = ctx->get<std::string>();
    const auto endings = j.find("endings");
    if (endings == j.end() || !endings->is_array() || endings->size() != 4)
      throw bad("\"endings\" must be an array of 4 strings");
    for (size_t i = 0; i < 4; ++i) {
      if (!(*endings)[i].is_string()) throw bad("\"endings\" must be an array of 4 strings");
      ex.endings[i] = (*endings)[i].get<std::string>();
    }
    const auto label = j.find("label");
    if (label == j.end() || !(label->is_number_integer() || label->is_number_unsigned()))
      throw bad("missing \"label\" (the index of the right ending, an integer 0..3)");
    const int64_t l = label->get<int64_t>();
    if (l < 0 || l > 3) throw bad("\"label\" must be 0, 1, 2 or 3, got " + std::to_string(l));
    ex.label = static_cast<int>(l);
    out.push_back(std::move(ex));
  }
  if (f.bad()) throw UserError("cannot read HellaSwag file '" + path + "': " + std::strerror(errno));
  if (out.empty()) throw UserError("HellaSwag file '" + path + "' holds no example");
  return out;
}

std::vector<HellaSwagExample> tokenize_hellaswag(const std::vector<HellaSwagText>& text,
                                                 const Tokenizer& tok, const std::string& path) {
  std::vector<HellaSwagExample> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const HellaSwagText& t = text[i];
    HellaSwagExample& e = out[i];
    e.line = t.line;
    e.label = t.label;
    try {
      e.ctx = tok.encode(t.ctx);
      for (int c = 0; c < 4; ++c) e.endings[c] = tok.encode(" " + t.endings[c]);
    } catch (const UserError& err) {  // e.g. invalid UTF-8
      throw UserError(where(path, t.line) + ": " + err.what());
    }
    if (e.ctx.empty()) throw UserError(where(path, t.line) + ": \"ctx\" is empty (nothing to predict the endings from)");
  }
  return out;
}

std::vector<HellaSwagExample> load_hellaswag(const std::string& path, const Tokenizer& tok, int64_t limit) {
  return tokenize_hellaswag(read_hellaswag(path, limit), tok, path);
}

double hellaswag_candidate_score(const float* row_losses, int ctx_len, int end_len) {
  double sum = 0;
  for (int i = 0; i < end_len; ++i) sum += row_losses[ctx_len - 1 + i];
  return sum / end_len;
}

int hellaswag_prediction(const std::array<double, 4>& scores) {
  int best = 0;
  for (int c = 1; c < 4; ++c)
    if (scores[c] < scores[best]) best = c;
  return best;
}

void check_hellaswag(const std::vector<HellaSwagExample>& examples, int vocab_size, int T, const std::string& path) {
  std::vector<int> row;
  for (const HellaSwagExample& e : examples)
    for (int c = 0; c < 4; ++c) build_row(e, c, T, vocab_size, path, row);
}

std::pair<size_t, size_t> hellaswag_slice(size_t n, int rank, int world) {
  const size_t w = static_cast<size_t>(std::max(world, 1)), r = static_cast<size_t>(rank);
  return {n * r / w, n * (r + 1) / w};
}

HellaSwagResult evaluate_hellaswag(Backend& be, const std::vector<HellaSwagExample>& examples, size_t begin,
                                   size_t end, int B, int T, const std::string& path) {
  HellaSwagResult res;
  end = std::min(end, examples.size());
  if (begin >= end) return res;
  const int V = be.model().vocab_size;
  const int pad = std::min(kEndOfText, V - 1);
  const size_t n_ex = end - begin;
  std::vector<std::array<double, 4>> scores(n_ex);
  std::vector<char> truncated(n_ex, 0);

  // One candidate row placed in the batch: which example and ending, the context tokens kept and
  // the ending's length.
  struct Row {
    size_t ex;
    int cand, ctx_len, end_len;
  };
  const size_t BT = static_cast<size_t>(B) * T;
  std::vector<int> inp(BT), tgt(BT);
  std::vector<float> losses(BT);
  std::vector<Row> rows;
  rows.reserve(static_cast<size_t>(B));
  std::vector<int> row;
  auto flush = [&] {
    if (rows.empty()) return;
    // Unused rows of the last batch: padding only (the batch keeps its shape B x T).
    for (size_t r = rows.size(); r < static_cast<size_t>(B); ++r) {
      std::fill(inp.begin() + static_cast<long>(r * T), inp.begin() + static_cast<long>((r + 1) * T), pad);
      std::fill(tgt.begin() + static_cast<long>(r * T), tgt.begin() + static_cast<long>((r + 1) * T), -1);
    }
    be.eval_losses(inp.data(), tgt.data(), B, T, losses.data());
    for (size_t r = 0; r < rows.size(); ++r) {
      const Row& w = rows[r];
      scores[w.ex][w.cand] = hellaswag_candidate_score(losses.data() + r * T, w.ctx_len, w.end_len);
    }
    rows.clear();
  };

  for (size_t i = 0; i < n_ex; ++i) {
    const HellaSwagExample& e = examples[begin + i];
    for (int c = 0; c < 4; ++c) {
      const int ctx_len = build_row(e, c, T, V, path, row);
      const int end_len = static_cast<int>(e.endings[c].size());
      if (ctx_len < static_cast<int>(e.ctx.size())) truncated[i] = 1;
      const size_t r = rows.size();
      int* in = inp.data() + r * T;
      int* tg = tgt.data() + r * T;
      const int L = static_cast<int>(row.size());
      for (int t = 0; t < T; ++t) {
        in[t] = t < L ? row[t] : pad;
        tg[t] = t + 1 < L ? row[t + 1] : -1;
      }
      rows.push_back({i, c, ctx_len, end_len});
      if (rows.size() == static_cast<size_t>(B)) flush();
    }
  }
  flush();

  for (size_t i = 0; i < n_ex; ++i) {
    res.total++;
    if (hellaswag_prediction(scores[i]) == examples[begin + i].label) res.correct++;
    if (truncated[i]) res.truncated++;
  }
  return res;
}

}  // namespace sgpt
