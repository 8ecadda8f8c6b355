#!/usr/bin/env bash
# The Raspberry Pi check (`make test-pi`): the whole Python toolkit, not only the exported C, in a 64-bit
# Arm Debian userland that qemu-aarch64-static runs on this x86 machine. It builds that userland once
# (debootstrap, kept under build/pi/, which git ignores), clones the committed project into it and there
# runs `make demo`, `edgevit-classify --runtime c` on samples/ with the shipped w8a8 weights, a check that
# the w8a8 replay's int8 products compiled to sdot, and the tests that exercise native Arm code.
# Run as root on Debian (CI's machine): it installs debootstrap and QEMU with apt when they are missing,
# and registers QEMU's binfmt handler. One line per stage with its wall time (emulated: QEMU's speed, not
# a Pi's); exits non-zero when a stage failed. Mounts it makes are undone on exit.
#   PI_DIR=build/pi     where the userland is kept (rebuilt when PACKAGES below change)
#   PI_MIRROR=...       the Debian mirror debootstrap and apt use inside
set -euo pipefail
cd "$(dirname "$0")/.."

PI_DIR=${PI_DIR:-build/pi}
ROOTFS="$PI_DIR/rootfs"
PI_MIRROR=${PI_MIRROR:-http://deb.debian.org/debian}
# what the project needs (python3-venv, clang, make, git) and what tools/setup.sh would otherwise
# install with apt inside the emulator, much slower than debootstrap's own pass: lld (wasm-ld), the
# arm64 cross headers it checks for, the fonts of the bank generators
PACKAGES=python3,python3-venv,clang,libc6-dev,make,git,ca-certificates,lld,libc6-dev-arm64-cross,fonts-dejavu-core,fonts-dejavu-extra,fonts-freefont-ttf,fonts-liberation,fonts-urw-base35
# native Arm code: the C library's flag and build, the replay's launcher and its int8 products at batch
# 1 (batch 256 and tests/test_runtime_classifier.py added 9 minutes emulated: compiles of big graphs)
TESTS=(
  tests/test_export.py::test_the_library_is_tuned_with_the_flag_this_compiler_takes_on_each_architecture
  "tests/test_replay_int8.py -k 'not 256'"
  tests/test_replay_launcher.py
)
CLONE=/root/edgevit  # inside the userland

say() { printf 'pi-check: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
apt_install() {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

host_tools() {
  [ "$(id -u)" = 0 ] || die "run as root: debootstrap, chroot and binfmt_misc need it"
  command -v apt-get >/dev/null || die "a Debian host is needed (apt-get, debootstrap)"
  if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null || ! command -v update-binfmts >/dev/null; then
    say "installing debootstrap, qemu-user-static and binfmt-support"
    apt_install debootstrap qemu-user-static binfmt-support ||
      die "apt-get install -y debootstrap qemu-user-static binfmt-support failed"
  fi
}

# The kernel runs arm64 programs through QEMU once binfmt_misc knows the handler. Its 'F' flag opens
# the static emulator at registration, so programs inside the chroot find it without a copy there.
binfmt() {
  local misc=/proc/sys/fs/binfmt_misc
  if [ ! -e "$misc/register" ]; then
    mount -t binfmt_misc binfmt_misc "$misc" || die "cannot mount binfmt_misc on $misc"
    MOUNTED_BINFMT=1
  fi
  if [ ! -e "$misc/qemu-aarch64" ]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  if [ ! -e "$misc/qemu-aarch64" ]; then
    # the magic and mask of Debian's /usr/share/binfmts/qemu-aarch64
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
      >"$misc/register" || die "cannot register qemu-aarch64 with binfmt_misc"
  fi
  grep -qx enabled "$misc/qemu-aarch64" || die "the qemu-aarch64 binfmt handler is disabled (update-binfmts --enable qemu-aarch64)"
  grep -q '^flags: .*F' "$misc/qemu-aarch64" ||
    die "the qemu-aarch64 binfmt handler lacks the F flag: update-binfmts --disable qemu-aarch64, then re-run"
}

# bookworm here, as on this host (and CI's): the same Python and clang as the x86 runs
userland() {
  local stamp="$ROOTFS/.edgevit-packages" suite
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PACKAGES" ]; then
    say "userland: $ROOTFS (cached)"
    return
  fi
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  say "userland: debootstrap --arch=arm64 $suite into $ROOTFS (emulated package set-up: minutes)"
  rm -rf "$ROOTFS" "$ROOTFS.tmp"
  mkdir -p "$PI_DIR"
  debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" "$suite" "$ROOTFS.tmp" "$PI_MIRROR" \
    >"$PI_DIR/debootstrap.log" 2>&1 || die "debootstrap failed: see $PI_DIR/debootstrap.log"
  echo "$PACKAGES" >"$ROOTFS.tmp/.edgevit-packages"
  mv "$ROOTFS.tmp" "$ROOTFS"
}

# committed code only: what CI tests is what a Pi owner would clone
clone() {
  rm -rf "$ROOTFS$CLONE"
  git clone --quiet "$PWD" "$ROOTFS$CLONE"
  say "clone: $(git -C "$ROOTFS$CLONE" log -1 --format='%h %s' | cut -c1-80)"
  git diff --quiet HEAD || say "note: uncommitted changes here are not part of the check"
}

MOUNTS=()
mount_inside() {
  # pip reaches PyPI from inside, trusting what this host trusts (a CI network may inspect TLS with
  # its own certificate authority, which a fresh userland's bundle lacks)
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  mount -t proc proc "$ROOTFS/proc" && MOUNTS+=("$ROOTFS/proc")
  # debootstrap made /dev's nodes (null, zero, urandom, tty); Python's multiprocessing locks need /dev/shm
  mount -t tmpfs shm "$ROOTFS/dev/shm" && MOUNTS+=("$ROOTFS/dev/shm")
}

cleanup() {
  local i
  # a process of the userland may still be exiting: a few tries, then detached once it has
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || { sleep 2 && umount "${MOUNTS[i]}" 2>/dev/null; } || umount --lazy "${MOUNTS[i]}" ||
      say "warning: could not unmount ${MOUNTS[i]}"
  done
  if [ -n "${MOUNTED_BINFMT:-}" ]; then umount /proc/sys/fs/binfmt_misc || true; fi
}

# `cmd` in the clone, in the userland, with a clean environment
inside() {
  chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -euo pipefail -c "cd $CLONE && $1"
}

RESULTS=()
FAILED=0
stage() {
  local name=$1 start=$SECONDS rc=0
  shift
  say "== $name"
  "$@" || rc=$?
  RESULTS+=("$(printf '%-14s %5ss  %s' "$name" $((SECONDS - start)) "$([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)")")")
  [ $rc = 0 ] || FAILED=1
  return $rc
}

summary() {
  printf '\npi-check summary (wall times under qemu-aarch64 emulation on %s, %s cores):\n' \
    "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(nproc)"
  printf '  %s\n' "${RESULTS[@]}"
}

main() {
  trap cleanup EXIT
  local start=$SECONDS
  stage host-tools host_tools || { summary; exit 1; }
  stage binfmt binfmt || { summary; exit 1; }
  stage debootstrap userland || { summary; exit 1; }
  stage clone clone || { summary; exit 1; }
  mount_inside
  inside 'say() { echo "pi-check: $*" >&2; }; say "$(uname -m), $(python3 --version), $(clang --version | head -1)"'
  stage pip-install inside 'make setup' || { summary; exit 1; }
  stage make-demo inside 'make demo' || true
  # --beam 0: the C runtime's default BEAM search (2) took 9 minutes emulated; the build and its Arm flag
  # are the same without it
  stage classify-c inside '.venv/bin/edgevit-classify --runtime c --beam 0 --json --weights weights/edgevit-mnist-w8a8.safetensors samples/ |
    .venv/bin/python tools/pi_check.py samples' || true
  stage sdot inside '.venv/bin/python tools/pi_check.py' || true
  stage tests inside ".venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 ${TESTS[*]}" || true
  RESULTS+=("$(printf '%-14s %5ss' total $((SECONDS - start)))")
  summary
  exit $FAILED
}

main "$@"
