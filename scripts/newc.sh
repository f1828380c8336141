#!/usr/bin/env bash
# Writes the directory ROOT as a cpio archive in the "newc" format the kernel unpacks as an
# initramfs (Documentation/driver-api/early-userspace/buffer-format.rst), to standard output,
# plus the device nodes an initramfs needs before anything mounts devtmpfs: /dev/console (5:1)
# and /dev/ttyS0 (4:64). Owners are root, times 0, inode numbers by order: reproducible.
#
#   scripts/newc.sh ROOT > initramfs.cpio
set -euo pipefail
root="$1"
ino=1

# entry NAME MODE(octal) SIZE RDEVMAJOR RDEVMINOR [FILE]
entry() {
    local name="$1" mode="$2" size="$3" rmaj="$4" rmin="$5" file="${6:-}"
    local namesize=$(( ${#name} + 1 ))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$ino" "$((8#$mode))" 0 0 1 0 "$size" 0 0 "$rmaj" "$rmin" "$namesize" 0
    printf '%s\0' "$name"
    pad $(( 110 + namesize ))
    if [ -n "$file" ]; then
        cat "$file"
        pad "$size"
    fi
    ino=$((ino + 1))
}

# NUL bytes up to the next multiple of 4 after LEN bytes.
pad() {
    local n=$(( (4 - $1 % 4) % 4 ))
    if [ "$n" -gt 0 ]; then head -c "$n" /dev/zero; fi
}

cd "$root"
while IFS= read -r path; do
    name="${path#./}"
    if [ -d "$path" ]; then
        entry "$name" 040755 0 0 0
    elif [ -f "$path" ]; then
        perm="$(stat -c %a "$path")"
        entry "$name" "100$perm" "$(stat -c %s "$path")" 0 0 "$path"
    fi
done < <(find . -mindepth 1 | LC_ALL=C sort)
entry dev/console 020600 0 5 1
entry dev/ttyS0 020660 0 4 64
entry TRAILER!!! 0 0 0 0
