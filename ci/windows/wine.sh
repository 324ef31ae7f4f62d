#!/bin/sh
# Cargo's runner for x86_64-pc-windows-gnu (ci/windows.sh sets it): runs one
# test binary under Wine 10 in the trixie chroot $TOFU_WINE_ROOT, in the same
# directory (the checkout and the target dir are mounted at the same paths).
# Without TMPDIR: Debian's Wine 10 aborts ("free(): invalid pointer") when it
# is set.
exec env -u TMPDIR chroot "$TOFU_WINE_ROOT" sh -c 'cd "$0" && exec /usr/lib/wine/wine64 "$@"' "$PWD" "$@"
