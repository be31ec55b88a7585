#include "train/train_hooks.h"

namespace sgpt {
namespace {
TrainHooks none;
TrainHooks* current = &none;
}  // namespace

TrainHooks& train_hooks() { return *current; }
void set_train_hooks(TrainHooks* hooks) { current = hooks ? hooks : &none; }

}  // namespace sgpt
