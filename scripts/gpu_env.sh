# Sourced by the GPU scripts on the GPU machine: the carried binaries (.carry/gpu, unpacked from
# .carry/gpu.tar.xz, or .carry/slim.tar.xz which holds sophiagpt and its MPI plugin alone, when
# needed) and the libraries they need there. Sets BIN (the folder of sophiagpt, gpu_tests,
# cpu_tests and the MPI plugin) and LD_LIBRARY_PATH.
if [[ -z ${BIN:-} ]]; then
  if [[ ! -d .carry/gpu ]]; then
    for t in .carry/gpu.tar.xz .carry/slim.tar.xz; do [[ -f $t ]] && { tar xJf $t -C .carry; break; }; done
  fi
  BIN=.carry/gpu
fi
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
# cuBLASLt (and cuDNN, NCCL): the toolkit's, else PyTorch's wheels.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -e $d/libcublasLt.so.13 ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
py_libs=$(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(":".join(os.path.join(p, d, "lib") for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "lib"))))' 2>/dev/null)
[[ -n $py_libs ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$py_libs"
