#!/usr/bin/env bash
# Fetches mmurr's corpus of real guests from Debian packages into a cache outside the
# repository (never committed), builds what the tests need from them, and prints where each
# file is. Idempotent: a file already there is kept.
#
#   MMURR_CORPUS   the cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/mmurr/corpus)
#
# It provides:
#   vmlinuz            the kernel of linux-image-cloud-amd64 (the metapackage's dependency,
#                      the real linux-image-*-cloud-amd64 package, unpacked with dpkg-deb -x)
#   initramfs.cpio.gz  a busybox (busybox-static) initramfs whose /init prints
#                      MMURR-INITRAMFS-OK on the console and powers off (poweroff -f)
#   bios.bin           SeaBIOS (seabios)
#
# `apt-get download` needs no root; `apt-get update` does, so without root the package lists
# are fetched into the cache's own apt state instead of the system's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

corpus="${MMURR_CORPUS:-${XDG_CACHE_HOME:-$HOME/.cache}/mmurr/corpus}"
mkdir -p "$corpus/debs"
cd "$corpus"

apt_opts=()
if [ "$(id -u)" = 0 ]; then
    # A cache the _apt user cannot write to: download as root without the sandbox warning.
    apt_opts=(-o "APT::Sandbox::User=root")
fi
if [ "$(id -u)" != 0 ]; then
    # Private apt state: lists and archives under the cache, no locks on the system's.
    mkdir -p apt/lists/partial apt/archives/partial
    apt_opts=(-o "Dir::State::Lists=$corpus/apt/lists" -o "Dir::Cache=$corpus/apt"
              -o "Debug::NoLocking=1")
fi

updated=no
apt_update() {
    if [ "$updated" = no ]; then
        echo "corpus: apt-get update" >&2
        apt-get "${apt_opts[@]}" -qq update >&2
        updated=yes
    fi
}

# The newest candidate's real package name for a (meta)package: its own name, or the
# linux-image-* it depends on.
resolve() {
    local pkg="$1" dep
    dep="$(apt-cache "${apt_opts[@]}" depends "$pkg" 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)"
    if [ -n "$dep" ]; then echo "$dep"; else echo "$pkg"; fi
}

# Downloads a package's .deb into debs/ (once) and prints its path.
fetch() {
    local pkg="$1" deb
    deb="$(ls debs/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
    if [ -z "$deb" ]; then
        if ! (cd debs && apt-get "${apt_opts[@]}" -qq download "$pkg" >&2); then
            apt_update
            (cd debs && apt-get "${apt_opts[@]}" -qq download "$pkg" >&2)
        fi
        deb="$(ls debs/"${pkg}"_*.deb | head -n1)"
    fi
    echo "$deb"
}

# Package names need the lists too: update once if the metapackage is unknown.
if ! apt-cache "${apt_opts[@]}" show linux-image-cloud-amd64 >/dev/null 2>&1; then
    apt_update
fi

# The kernel.
if [ ! -s vmlinuz ]; then
    real="$(resolve linux-image-cloud-amd64)"
    deb="$(fetch "$real")"
    rm -rf unpack/kernel && mkdir -p unpack/kernel
    dpkg-deb -x "$deb" unpack/kernel
    cp "$(ls unpack/kernel/boot/vmlinuz-* | head -n1)" vmlinuz.tmp && mv vmlinuz.tmp vmlinuz
    echo "$real" > vmlinuz.package
    rm -rf unpack/kernel
fi

# SeaBIOS.
if [ ! -s bios.bin ]; then
    deb="$(fetch seabios)"
    rm -rf unpack/seabios && mkdir -p unpack/seabios
    dpkg-deb -x "$deb" unpack/seabios
    cp unpack/seabios/usr/share/seabios/bios.bin bios.bin.tmp && mv bios.bin.tmp bios.bin
    rm -rf unpack/seabios
fi

# The busybox initramfs.
if [ ! -s initramfs.cpio.gz ]; then
    deb="$(fetch busybox-static)"
    rm -rf unpack/busybox && mkdir -p unpack/busybox
    dpkg-deb -x "$deb" unpack/busybox
    root="$corpus/unpack/root"
    rm -rf "$root" && mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
    cp unpack/busybox/bin/busybox "$root/bin/busybox"
    cat > "$root/init" <<'INIT'
#!/bin/busybox sh
# mmurr corpus initramfs: say we got here, then power off (without ACPI the kernel halts).
/bin/busybox echo MMURR-INITRAMFS-OK
/bin/busybox echo MMURR-INITRAMFS-OK > /dev/ttyS0
/bin/busybox poweroff -f
INIT
    chmod 755 "$root/init" "$root/bin/busybox"
    # Our own newc writer rather than cpio(1): it adds /dev/console and /dev/ttyS0 as device
    # entries without mknod (no root needed), and its output is byte-for-byte reproducible.
    "$here/newc.sh" "$root" > initramfs.cpio.tmp
    gzip -n -9 < initramfs.cpio.tmp > initramfs.cpio.gz.tmp
    mv initramfs.cpio.gz.tmp initramfs.cpio.gz
    rm -rf initramfs.cpio.tmp unpack/busybox "$root"
fi

for f in vmlinuz initramfs.cpio.gz bios.bin; do
    if [ ! -s "$f" ]; then
        echo "corpus: $f is missing after fetching" >&2
        exit 1
    fi
done
echo "corpus: $corpus"
echo "kernel:    $corpus/vmlinuz ($(cat vmlinuz.package 2>/dev/null || echo unknown package))"
echo "initramfs: $corpus/initramfs.cpio.gz"
echo "seabios:   $corpus/bios.bin"
