# Finding GPUs and starting one process per GPU with mpirun: shared by the scripts in scripts/.
# Source it from bash (`source "$ROOT/scripts/lib/gpus.sh"`); it only defines functions and sets no
# shell options.
#
#   sgpt_gpu_count       prints how many GPUs `nvidia-smi -L` lists (MIG instances are not
#                        counted); 0 without nvidia-smi or without a working driver
#   sgpt_gpu_names       prints the name of each GPU, one per line; nothing without nvidia-smi
#   sgpt_gpu_info        prints one line per GPU: name, driver version, total memory (nvidia-smi's
#                        CSV); nothing without nvidia-smi
#   sgpt_mpirun NP [VAR[=VALUE]...]
#                        sets the array SGPT_MPIRUN to the Open MPI command that starts NP
#                        processes, to be followed by the program and its arguments:
#                          mpirun -np NP [--allow-run-as-root] --bind-to none [-x VAR[=VALUE]...]
#                        --allow-run-as-root only when run as root (Open MPI refuses root without
#                        it); --bind-to none so that Open MPI does not pin each process to one core
#                        (sophiagpt runs threads of its own); -x sends each named variable to every
#                        process, on every node (a process on mpirun's own node also inherits
#                        mpirun's environment). Example:
#                          sgpt_mpirun 2 NCCL_P2P_DISABLE=1 && "${SGPT_MPIRUN[@]}" build/sophiagpt train ...

sgpt_gpu_count() {
  local n=0
  if command -v nvidia-smi >/dev/null 2>&1; then
    n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ') || n=0
  fi
  echo "$n"
}

sgpt_gpu_names() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true
}

sgpt_gpu_info() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
}

sgpt_mpirun() {
  local np=${1:?sgpt_mpirun: the number of processes}
  shift
  SGPT_MPIRUN=(mpirun -np "$np")
  if [[ "$(id -u)" == 0 ]]; then SGPT_MPIRUN+=(--allow-run-as-root); fi
  SGPT_MPIRUN+=(--bind-to none)
  local v
  for v in "$@"; do SGPT_MPIRUN+=(-x "$v"); done
}
