# Sourced by the GPU scripts (gpu_test.sh run, gpu_dist_test.sh, gpu_cli_check.sh,
# accum_precision.sh): the binaries that `scripts/dev/gpu_test.sh pack` packed on another host, and the
# libraries they need on this one. The pack folder is $SGPT_PACK_DIR (default gpu-pack):
# gpu-pack/gpu/ is used as it is, else it is unpacked from gpu-pack/gpu.tar.xz or, failing that,
# gpu-pack/slim.tar.xz (sophiagpt and its MPI plugin alone). Sets BIN (the folder of sophiagpt,
# gpu_tests, cpu_tests and the MPI plugin; set BIN yourself to use another build) and
# LD_LIBRARY_PATH.
if [[ -z ${BIN:-} ]]; then
  pack=${SGPT_PACK_DIR:-gpu-pack}
  if [[ ! -d $pack/gpu ]]; then
    for t in "$pack/gpu.tar.xz" "$pack/slim.tar.xz"; do [[ -f $t ]] && { tar xJf "$t" -C "$pack"; break; }; done
  fi
  BIN=$pack/gpu
fi
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
# cuBLASLt (and cuDNN, NCCL): the toolkit's, else PyTorch's wheels.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -e $d/libcublasLt.so.13 ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
py_libs=$(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(":".join(os.path.join(p, d, "lib") for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "lib"))))' 2>/dev/null)
[[ -n $py_libs ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$py_libs"
