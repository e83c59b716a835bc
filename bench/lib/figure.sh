# shellcheck shell=bash
# bench/lib/figure.sh: the contract that a bench's figure line is its LAST line (DEVELOPERS.md,
# bench/README.md), whether its stdout and stderr are read together or apart.
#
# A bench sources this, hands its cleanup to `bench_trap` instead of `trap … EXIT`, and gives
# its figure to `bench_figure` instead of printing it. On exit the cleanup runs first, all of
# its output sent to stderr, and only then, if the run succeeded, the figure is printed on
# stdout: nothing the cleanup says ("stopping the libvirtd we started", a killed server's
# complaint) can come after it.
#
#   . "$root/bench/lib/figure.sh"
#   cleanup() { ...; }
#   bench_trap cleanup
#   ...
#   bench_figure "boot: +12 ms over bare qemu (0.11x vs libvirt)"
#
# Checked by bench/lib/test-figure.

_bench_cleanup=
_bench_figure=

# bench_trap FUNCTION: run FUNCTION on exit (any exit: success, failure, INT/TERM), before the figure.
bench_trap() {
  _bench_cleanup=$1
  trap _bench_exit EXIT
}

# bench_figure LINE: the bench's result line, printed last on exit (only when the run succeeded).
bench_figure() {
  _bench_figure=$1
}

_bench_exit() {
  local rc=$?
  trap - EXIT
  set +e
  if [ -n "$_bench_cleanup" ]; then
    "$_bench_cleanup" >&2
  fi
  if [ "$rc" = 0 ] && [ -n "$_bench_figure" ]; then
    printf '%s\n' "$_bench_figure"
  fi
  exit "$rc"
}
