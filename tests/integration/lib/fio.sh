# fio.sh - sourced by integration tests that run fio through build/lib/fio-blkfront.so.
#
# engine_fio ARGS...: fio with the engine loaded. Under SANITIZE=1 the engine links ASan/UBSan,
# whose runtimes must come first in the (uninstrumented) fio process, so they are preloaded; fio
# itself leaks a few bytes at exit, so leak reports are off for fio (the library's leaks are
# caught by its unit tests under LeakSanitizer). env execs fio, so a background call's $! is fio.
# Verify state files are not written (they would land in the caller's directory).
# FIO_PRELOAD and FIO_ASAN are the environment for scripts that run fio themselves:
#   env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" fio ...
# Needs LIB (build/lib).

FIO_PRELOAD=$(ldd "$LIB/fio-blkfront.so" | awk '/lib(a|ub)san/ { printf "%s ", $3 }')
FIO_ASAN="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

engine_fio() {
	env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
		fio --ioengine="external:$LIB/fio-blkfront.so" --verify_state_save=0 "$@"
}
