// HellaSwag (Zellers et al. 2019), scored the way llm.c scores it (its acc_norm, "completion
// style"): for each example the context and each of the 4 endings form one row, context tokens =
// encode(ctx), ending tokens = encode(" " + ending); a candidate's score is the MEAN cross-entropy
// of its ending tokens, each predicted from everything before it (ending token i at position
// len(ctx) + i - 1), the context itself not scored; the prediction is the candidate with the
// lowest score (the first one on ties) and the accuracy is the fraction of examples whose
// prediction is the label.
//
// Input: the HellaSwag JSONL as the rowanz/hellaswag repository ships it (hellaswag_val.jsonl,
// 10,042 examples; docs/eval.md), one JSON object per line with at least "ctx" (string),
// "endings" (4 strings) and "label" (0..3); other keys are ignored, blank lines skipped.
//
// Batching: candidate rows are packed into B x T batches in order (4 rows per example, so B/4
// examples per batch; an example may straddle two batches), padded with token 50256 whose
// positions get target -1 and are never scored. A row longer than T keeps its ending whole and
// drops context tokens from the left (at least one context token stays); with the GPT-2 block of
// 1024 no HellaSwag row is that long, so this only matters for models with a short block.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace sgpt {

class Tokenizer;

struct HellaSwagText {
  std::string ctx;
  std::array<std::string, 4> endings;
  int label = 0;
  int64_t line = 0;  // 1-based line in the file
};

struct HellaSwagExample {
  std::vector<int> ctx;
  std::array<std::vector<int>, 4> endings;
  int label = 0;
  int64_t line = 0;
};

// Reads the JSONL file (at most `limit` examples when limit > 0). Throws UserError naming the file
// and the line for a line that is not JSON or lacks a valid "ctx", "endings" or "label", and for a
// file that cannot be read or holds no example.
std::vector<HellaSwagText> read_hellaswag(const std::string& path, int64_t limit = 0);

// Tokenizes as llm.c does (ctx; " " + ending). Throws UserError naming the file and line of an
// example whose context encodes to no token.
std::vector<HellaSwagExample> tokenize_hellaswag(const std::vector<HellaSwagText>& text,
                                                 const Tokenizer& tok, const std::string& path);

// read_hellaswag + tokenize_hellaswag.
std::vector<HellaSwagExample> load_hellaswag(const std::string& path, const Tokenizer& tok,
                                             int64_t limit = 0);

// The score of one candidate: mean of row_losses[ctx_len - 1 .. ctx_len + end_len - 2], the
// losses of the positions that predict the ending tokens (row_losses[t] = CE of predicting token
// t + 1 of the row). ctx_len >= 1, end_len >= 1.
double hellaswag_candidate_score(const float* row_losses, int ctx_len, int end_len);
// argmin over the 4 scores, the lowest index on ties (llm.c's strict "<").
int hellaswag_prediction(const std::array<double, 4>& scores);

struct HellaSwagResult {
  int64_t correct = 0;
  int64_t total = 0;
  int64_t truncated = 0;  // examples with a row cut to fit T (context dropped from the left)
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
};

// Scores examples [begin, end) with the backend's eval_losses, in batches of B rows of T tokens
// (T: the backend's allocated sequence length; B <= its allocated batch). Throws UserError when an
// id is outside the model's vocabulary or an ending does not fit in T with one context token.
// Local to this process (not collective).
HellaSwagResult evaluate_hellaswag(Backend& be, const std::vector<HellaSwagExample>& examples,
                                   size_t begin, size_t end, int B, int T,
                                   const std::string& path = "HellaSwag");

// The checks evaluate_hellaswag makes, on every example at once (so that all ranks of a run fail
// alike, before any of them waits for the others): ids within [0, vocab_size), every ending
// shorter than T.
void check_hellaswag(const std::vector<HellaSwagExample>& examples, int vocab_size, int T,
                     const std::string& path = "HellaSwag");

// The slice of n examples that rank `rank` of `world` scores: [n*rank/world, n*(rank+1)/world).
std::pair<size_t, size_t> hellaswag_slice(size_t n, int rank, int world);

}  // namespace sgpt
