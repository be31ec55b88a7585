#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the demo need. Idempotent: packages that
# are already at the pinned version are left alone. Versions are pinned; apt verifies each package
# against the signed archive index (sha256), which is the checksum pin for Debian packages.
# clang + libclang-rt-14-dev (libFuzzer and the sanitizer runtimes; only a Recommends of clang,
# so it is named here) are for scripts/fuzz.sh.
set -euo pipefail

PKGS=(
  "libcli11-dev=2.1.2+ds-1"
  "nlohmann-json3-dev=3.11.2-2"
  "libgtest-dev=1.12.1-0.2"
  "libgmock-dev=1.12.1-0.2"
  "libbenchmark-dev=1.7.1-1"
  "libpcre2-dev=10.42-1+deb12u2"
  "liblzma-dev=5.4.1-1"
  "libarchive-dev=3.6.2-1+deb12u5"
  "libopenmpi-dev=4.1.4-3+b1"
  "openmpi-bin=4.1.4-3+b1"
  "gnuplot-nox=5.4.4+dfsg1-2+b2"
  "python3=3.11.2-1+b1"
  "clang=1:14.0-55.7~deb12u1"
  "libclang-rt-14-dev=1:14.0.6-12"
)

missing=()
for spec in "${PKGS[@]}"; do
  name=${spec%%=*}; want=${spec#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  if [[ "$have" != "install ok installed $want" ]]; then missing+=("$spec"); fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
