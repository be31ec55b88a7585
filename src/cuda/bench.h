// `sophiagpt bench`: the GPU benchmarks (src/cuda/bench.cpp), their options and entry points.
// Plain C++ header (no CUDA includes): the command line (src/cli/bench_command.cpp) fills the
// options and calls them. A build without CUDA links src/device/no_cuda.cpp instead, whose entry
// points say that this build has none.
#pragma once
#include <string>
#include <vector>

namespace sgpt {

struct OptimizerBenchOptions {
  std::vector<std::string> models = {"124M", "355M", "774M"};
  std::vector<std::string> precisions = {"fp32", "bf16", "fp16"};
  int warmup = 5;
  int reps = 30;
};

struct TrainBenchOptions {
  std::string model = "124M";
  std::string precision = "bf16";
  int batch = 64;           // micro-batch sequences
  int seq = 1024;           // T
  int accum = 1;            // micro-steps per optimizer step
  int k = 10;               // Sophia-G / Sophia-H hessian interval
  std::vector<double> fractions = {1.0, 0.5};  // estimator batch fractions (GNB, Hutchinson)
  std::vector<std::string> optimizers = {"adamw", "sophiag"};
  std::vector<std::string> attentions = {"auto"};  // "auto", "own", "cudnn" (interleaved)
  std::vector<std::string> lm_heads = {"bf16"};  // "bf16", "fp8" (lm_head_precision; interleaved)
  // Sophia-H's Hessian-vector product attention: "fused", "materialized" (each a Sophia-H row)
  std::vector<std::string> hvp_attentions = {"fused"};
  int steps = 20;           // timed steps per configuration (rounded up to a multiple of k)
  int warmup = 3;           // untimed steps (the last one runs a GNB pass for Sophia-G)
  double peak_tflops = 0;   // for MFU; 0 = from the GPU's name (detect_peak_tflops)
  int recompute = 0;        // activation recompute level (config key `recompute`)
  bool cuda_graphs = false; // micro-steps replayed from CUDA graphs (config key `cuda_graphs`)
  std::string grad_accum = "auto";  // config key `grad_accum_precision`: auto = fp32 when accum > 1
  bool memory = false;      // print the device memory breakdown after the runs
  double memory_budget_gib = 0;  // > 0: first find the largest micro-batch fitting this budget
  std::string data;         // glob of llm.c token shards; empty = random tokens
  bool bias = false;        // linear and LayerNorm biases (the official Sophia recipes: none;
                            // llm.c's GPT-2: with), for like-for-like comparisons
};

// `bench sample` (src/cuda/bench_sample.cpp): decoding speed from random weights.
struct SampleBenchOptions {
  std::vector<std::string> models = {"124M", "demo"};  // GPT-2 124M; demo = configs/demo_gpu.json's 6 x 384
  std::vector<int> batches = {1, 8};                   // sequences decoded together
  std::vector<std::string> precisions = {"fp32", "bf16"};  // of the batch decoder
  int tokens = 256;     // generated per sequence (prefill included in the time, as `sample`)
  int prompt = 16;      // prompt tokens per sequence
  int top_k = 40;       // sampling cut (0: none: every logit to the host)
  int reps = 3;         // timed runs per row after one untimed run (the median is reported)
  bool baseline = true; // also the GPU decoder without graphs, sampling from host logits (the path before graphs)
  bool dependent_launches = true;  // the batch decoder's (CudaBatchOptions); false: plain launches
};

// `bench optimizer`, `bench train` and `bench sample`: run the benchmark and print its tables on
// stdout. UserError for an option out of range or no usable device.
void bench_optimizer(const OptimizerBenchOptions& o);
void bench_train(const TrainBenchOptions& o);
void bench_sample(const SampleBenchOptions& o);

}  // namespace sgpt
