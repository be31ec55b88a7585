#!/usr/bin/env bash
# Installs every package the build, the tests and the demo need, the build tools included, so that
# a minimal Debian 12 or Ubuntu 24.04 with no build tools runs scripts/demo.sh and scripts/test.sh.
# Idempotent: what is already there is left alone.
#
# Libraries and tools of the project (CLI11, nlohmann-json, GoogleTest, PCRE2, liblzma, libarchive,
# Open MPI, gnuplot, python3, clang + its sanitizer/libFuzzer runtime for scripts/dev/fuzz.sh): a
# package not installed at the pinned version is installed at it.
# Build tools: CMake >= 3.24, g++ >= 12 with make (build-essential), pkg-config, node >= 18 and npm
# (scripts/fetch_assets.sh): installed, pinned, only when the tool is missing or too old, so a
# toolchain installed by other means (NodeSource's node, Kitware's CMake) is used as it is.
#
# Pins by distribution (/etc/os-release ID and VERSION_ID):
#   debian 12     exact versions; apt verifies each package against the signed archive index
#                 (sha256), which is the checksum pin for Debian packages. Debian 12's own stable and
#                 security updates of a pinned package (the same version with a +deb12uN or ~deb12uN
#                 suffix, or a higher N) are accepted in its place: the archive keeps only the newest
#                 one, so an exact pin stops being installable when Debian publishes an update (this
#                 happened to liblzma-dev 5.4.1-1, now 5.4.1-1+deb12u1). An installed update counts as
#                 the pin; when the pin itself is gone, the newest such update is installed and named.
#   ubuntu 24.04  unpinned, with a notice: the release pocket's versions would be findable, but a
#                 package pinned there cannot be installed next to its dependencies' security
#                 updates (exact-version dependencies), so apt picks the current versions; the
#                 versions installed are printed.
#   other apt-based systems: unpinned, with a notice (best effort; not tested).
set -euo pipefail

OS_ID=unknown OS_VERSION=""
if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  OS_ID=$(. /etc/os-release && echo "${ID:-unknown}")
  # shellcheck disable=SC1091
  OS_VERSION=$(. /etc/os-release && echo "${VERSION_ID:-}")
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "setup: error: this script installs Debian packages with apt-get; on $OS_ID $OS_VERSION install by hand what" \
       "README.md lists under prerequisites" >&2
  exit 1
fi

case "$OS_ID-$OS_VERSION" in
  debian-12)
    PINNED=1
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
    TOOL_CMAKE=("cmake=3.25.1-1")
    TOOL_CXX=("g++=4:12.2.0-3" "build-essential=12.9")
    TOOL_MAKE=("make=4.3-4.1")
    TOOL_PKGCONFIG=("pkg-config=1.8.1-1")
    TOOL_NODE=("nodejs=18.20.4+dfsg-1~deb12u3" "npm=9.2.0~ds1-1")
    ;;
  *)
    PINNED=0
    if [[ "$OS_ID-$OS_VERSION" == ubuntu-24.04 ]]; then
      echo "setup: notice: Ubuntu 24.04: packages are installed unpinned (current noble versions; see the" \
           "comment at the top of scripts/setup.sh)"
      RT=libclang-rt-18-dev  # noble's default clang is 18
    else
      echo "setup: notice: $OS_ID $OS_VERSION is neither Debian 12 nor Ubuntu 24.04: installing unpinned," \
           "best effort"
      RT=""
    fi
    PKGS=(libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev liblzma-dev
          libarchive-dev libopenmpi-dev openmpi-bin gnuplot-nox python3 clang ${RT:+"$RT"})
    TOOL_CMAKE=(cmake)
    TOOL_CXX=(g++ build-essential)
    TOOL_MAKE=(make)
    TOOL_PKGCONFIG=(pkg-config)
    TOOL_NODE=(nodejs npm)
    ;;
esac

# VERSION is PIN or one of Debian 12's stable/security updates of it: PIN's base (PIN without a
# trailing +deb12uN / ~deb12uN) followed by +deb12uN or ~deb12uN, and not older than PIN.
pin_accepts() {  # PIN VERSION
  local pin=$1 v=$2 base=${1%[+~]deb12u*}
  [[ "$v" == "$pin" ]] && return 0
  [[ "${v#"$base"}" =~ ^[+~]deb12u[0-9]+$ ]] && dpkg --compare-versions "$v" ge "$pin"
}

# A package spec ("name=version" pinned, or "name") that is not installed (at that version).
missing=()
want_pkg() {
  local spec=$1 name=${1%%=*} have
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  if [[ "$have" != "install ok installed "* ]]; then
    missing+=("$spec")
  elif [[ "$spec" == *=* ]] && ! pin_accepts "${spec#*=}" "${have#install ok installed }"; then
    missing+=("$spec")
  fi
}
for spec in "${PKGS[@]}"; do want_pkg "$spec"; done

# Build tools: "NAME VERSION" of what is on PATH, compared with the minimum the build needs.
version_ge() { dpkg --compare-versions "$1" ge "$2"; }
have_cmake() {
  local v; v=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')
  [[ -n "$v" ]] && version_ge "$v" 3.24
}
have_cxx() {
  local v; v=$(g++ -dumpfullversion 2>/dev/null || g++ -dumpversion 2>/dev/null || true)
  [[ -n "$v" ]] && version_ge "$v" 12
}
have_node() {
  local v; v=$(node --version 2>/dev/null | sed 's/^v//')
  [[ -n "$v" ]] && version_ge "$v" 18 && command -v npm >/dev/null
}
tools=()
if ! have_cmake; then missing+=("${TOOL_CMAKE[@]}"); tools+=(cmake); fi
if ! have_cxx; then missing+=("${TOOL_CXX[@]}"); tools+=(g++); fi
if ! command -v make >/dev/null; then missing+=("${TOOL_MAKE[@]}"); tools+=(make); fi
if ! command -v pkg-config >/dev/null; then missing+=("${TOOL_PKGCONFIG[@]}"); tools+=(pkg-config); fi
if ! have_node; then missing+=("${TOOL_NODE[@]}"); tools+=(node/npm); fi

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PKGS[@]} packages present; cmake, g++, make, pkg-config, node and npm found"
  exit 0
fi
# One spec per package (g++/build-essential may come twice through make's fallback).
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
if ((${#tools[@]})); then echo "setup: build tools missing or too old: ${tools[*]}"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if ((PINNED)); then
  # A pin the archive no longer has: the newest Debian 12 update of it that it has (pin_accepts).
  for i in "${!missing[@]}"; do
    spec=${missing[$i]}
    [[ "$spec" == *=* ]] || continue
    name=${spec%%=*} pin=${spec#*=}
    mapfile -t avail < <(apt-cache madison "$name" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
    best=""
    for v in "${avail[@]}"; do [[ "$v" == "$pin" ]] && best=$v; done
    [[ -n "$best" ]] && continue
    for v in "${avail[@]}"; do
      if pin_accepts "$pin" "$v" && { [[ -z "$best" ]] || dpkg --compare-versions "$v" gt "$best"; }; then best=$v; fi
    done
    if [[ -z "$best" ]]; then
      echo "setup: error: $name $pin (pinned in scripts/setup.sh) is not in the archive, nor any Debian 12" \
           "update of it; available: ${avail[*]:-none}" >&2
      exit 1
    fi
    echo "setup: notice: $name $pin has left the archive; installing its Debian 12 update $best"
    missing[$i]="$name=$best"
  done
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
if ((!PINNED)); then
  echo "setup: installed versions (unpinned):"
  for spec in "${missing[@]}"; do dpkg-query -W -f='  ${Package} ${Version}\n' "${spec%%=*}" 2>/dev/null || true; done
fi
echo "setup: done"
