// sophiagpt: GPT-2 pretraining with Sophia-G, Sophia-H, AdamW and Lion; CPU reference and CUDA
// backends. The command line is src/cli/app.cpp.
#include "cli/commands.h"

int main(int argc, char** argv) { return sgpt::run_sophiagpt(argc, argv); }
