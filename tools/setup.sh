#!/usr/bin/env bash
# Idempotent set-up: Python 3.11+ check, clang for tinygrad's CPU backend, the WebAssembly toolchain,
# .venv with edgevit[dev]. Re-running is cheap: the pip step only runs when pyproject.toml changed.
#   tools/setup.sh            what `make demo` and `make test` need
#   tools/setup.sh browser    also Debian's chromium and chromium-driver (make test-browser)
#   tools/setup.sh devices    also OpenCL on the CPU (pocl), Vulkan on the CPU (Mesa's llvmpipe) and the
#                             [webgpu] extra (Dawn) for WebGPU, the 64-bit ARM cross compiler and QEMU user
#                             mode, and the Cortex-M toolchain and QEMU system emulator (make test-devices)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA=${1:-}

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; return; fi
  return 1
}
apt_install() {
  if ! command -v apt-get >/dev/null; then return 1; fi
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$("$PYTHON" --version 2>&1) is too old: tinygrad 0.14 needs Python 3.11 or newer"
"$PYTHON" -c 'import struct, sys; sys.exit(struct.calcsize("P") != 8)' ||
  die "a 64-bit OS is needed (tinygrad's CPU backend does not run on 32-bit)"

if ! command -v clang >/dev/null; then
  say "installing clang (tinygrad's CPU backend compiles its kernels with it)"
  apt_install clang || die "clang is missing: install it (Debian/Ubuntu/Raspberry Pi OS: sudo apt-get install -y clang) and re-run"
fi

# the test that proves the exported C has no x86-only code compiles it for 64-bit ARM: that needs
# the arm64 C headers (a compile-only check; nothing is linked or run)
if [ ! -f /usr/aarch64-linux-gnu/include/math.h ]; then
  say "installing the arm64 C headers (the C export is test-compiled for aarch64)"
  apt_install libc6-dev-arm64-cross ||
    say "warning: arm64 headers missing (sudo apt-get install -y libc6-dev-arm64-cross); the aarch64 compile test will fail"
fi

# the explorer's WebAssembly: clang 19 vectorises the int8 kernels for WASM SIMD (clang 14, Debian 12's
# default, makes int8 about 2x slower in the browser); plain lld is the fallback
if ! command -v wasm-ld-19 >/dev/null && ! command -v wasm-ld >/dev/null; then
  say "installing clang-19 and lld-19 (the C export is also built as WebAssembly)"
  apt_install clang-19 lld-19 || apt_install lld ||
    say "warning: no wasm-ld (sudo apt-get install -y clang-19 lld-19); the WebAssembly build and its tests will fail"
fi

# the fonts the banks of non-digits were drawn with (tools/negatives.py; the tests redraw some) and the
# synthetic printed digits of tools/realworld.py
if [ ! -d /usr/share/fonts/truetype/freefont ] || [ ! -d /usr/share/fonts/truetype/liberation ] || [ ! -d /usr/share/fonts/opentype/urw-base35 ]; then
  say "installing fonts (the generators of non-digit and printed images draw with them)"
  apt_install fonts-dejavu-core fonts-dejavu-extra fonts-freefont-ttf fonts-liberation fonts-urw-base35 ||
    say "warning: fonts missing (sudo apt-get install -y fonts-freefont-ttf fonts-liberation fonts-urw-base35); the bank tests will fail"
fi

if [ "$EXTRA" = browser ] && ! command -v chromedriver >/dev/null; then
  say "installing chromium and chromium-driver (the explorer's tests run in headless Chromium)"
  apt_install chromium chromium-driver || die "the browser tests need chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver"
fi

if [ "$EXTRA" = devices ]; then
  for tool in arm-none-eabi-gcc qemu-system-arm aarch64-linux-gnu-gcc qemu-aarch64-static; do
    if ! command -v "$tool" >/dev/null; then
      say "installing the ARM cross compilers and QEMU (the device tests build for and emulate ARM boards)"
      apt_install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc-aarch64-linux-gnu qemu-user-static ||
        die "the device tests need: sudo apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc-aarch64-linux-gnu qemu-user-static"
      break
    fi
  done
  # OpenCL on the CPU for the OpenCL tests, visible only where OCL_ICD_VENDORS names our own folder:
  # installed system-wide, pocl would become tinygrad's default for every program on the machine
  vendors="$VENV/opencl-vendors"
  if [ ! -f "$vendors/pocl.icd" ]; then
    had_pocl=0
    [ -f /etc/OpenCL/vendors/pocl.icd ] && had_pocl=1
    say "installing pocl (OpenCL on the CPU) for the OpenCL tests"
    apt_install pocl-opencl-icd ocl-icd-libopencl1 || die "the OpenCL tests need: sudo apt-get install -y pocl-opencl-icd ocl-icd-libopencl1"
    library=$(dpkg -L libpocl2 | grep -m1 '/libpocl\.so\.2$') || die "libpocl2 is installed but its library was not found"
    mkdir -p "$vendors"
    echo "$library" >"$vendors/pocl.icd"
    # a pocl this set-up installed is hidden again; one that was there before is the user's to keep
    if [ "$had_pocl" = 0 ]; then
      as_root rm -f /etc/OpenCL/vendors/pocl.icd || say "warning: remove /etc/OpenCL/vendors/pocl.icd as root to hide pocl again"
    fi
  fi
  # WebGPU (Dawn) needs a Vulkan driver: Mesa's llvmpipe runs it on the CPU. Left installed system-wide:
  # nothing uses Vulkan by itself, and EdgeViT never chooses a CPU-emulated WebGPU on its own
  if ! compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null; then
    say "installing Mesa's Vulkan drivers (the WebGPU tests run on llvmpipe, Vulkan on the CPU)"
    apt_install mesa-vulkan-drivers || die "the WebGPU tests need: sudo apt-get install -y mesa-vulkan-drivers"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv || die "Python's venv module is missing: sudo apt-get install -y python3-venv, then re-run"
    "$PYTHON" -m venv "$VENV"
  fi
fi

stamp="$VENV/.edgevit-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing edgevit and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# the WebGPU tests' Dawn library: the [webgpu] extra, installed once (the stamp above covers [dev] only)
if [ "$EXTRA" = devices ] && ! "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pydawn") is None)'; then
  say "installing the [webgpu] extra (Dawn, for tinygrad's WEBGPU backend) into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,webgpu]'
fi

