#!/bin/sh
# The whole suite on every Lua version in turn: `make test LUA=<lua>` for each
# interpreter named (default: LuaJIT and 5.1-5.4). Goes on after a failing
# version, prints each version's busted summary, wall and CPU time, and ends with
# the totals in busted's own format (what .ci/run reads). Exits 1 if any failed.
# BUSTED_ARGS and MAKE pass through.
set -u
LUAS=${*:-"luajit lua5.1 lua5.2 lua5.3 lua5.4"}
MAKE=${MAKE:-make}
log=$(mktemp)
report=$(mktemp)
cpu=$(mktemp)
trap 'rm -f "$log" "$report" "$cpu"' EXIT
rc=0
tp=0 tf=0 te=0 tn=0
for lua in $LUAS; do
  echo "=== make test LUA=$lua"
  start=$(date +%s.%N)
  # CPU seconds too (busted, the build, child interpreters): wall time depends on
  # what else the machine runs
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -o "$cpu" -f '%U %S' $MAKE --no-print-directory test LUA="$lua" \
      BUSTED_ARGS="${BUSTED_ARGS:-}" >"$log" 2>&1
    status=$?
  else
    $MAKE --no-print-directory test LUA="$lua" BUSTED_ARGS="${BUSTED_ARGS:-}" >"$log" 2>&1
    status=$?
  fi
  end=$(date +%s.%N)
  wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  cpus=$(awk '/^[0-9.]+ [0-9.]+$/ { printf "%.1f", $1 + $2 }' "$cpu" 2>/dev/null)
  # busted: "145 successes / 0 failures / 0 errors / 0 pending : 6.1 seconds"
  summary=$(grep -aE '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1)
  if [ -n "$summary" ]; then
    set -- $(echo "$summary" | sed -E 's#^([0-9]+) [a-z]+ / ([0-9]+) [a-z]+ / ([0-9]+) [a-z]+ / ([0-9]+) pending.*#\1 \2 \3 \4#')
    tp=$((tp + $1)) tf=$((tf + $2)) te=$((te + $3)) tn=$((tn + $4))
  else
    summary="no busted summary (build or start failure)"
    te=$((te + 1))
  fi
  if [ "$status" -ne 0 ]; then
    rc=1
    # the failures and errors, without the progress line
    grep -aE '^(Failure|Error) (→|->) ' -A3 "$log" | sed 's/^/    /'
    [ -n "$(grep -aE '^(Failure|Error) (→|->) ' "$log")" ] || tail -n 20 "$log" | sed 's/^/    /'
  fi
  printf '%-7s %-8s wall %5ss cpu %5ss  %s\n' "$lua" "$([ "$status" -eq 0 ] && echo ok || echo FAILED)" \
    "$wall" "${cpus:-?}" "$summary" | tee -a "$report"
done
echo "=== every version"
cat "$report"
echo "$tp successes / $tf failures / $te errors / $tn pending : every version ($LUAS)"
exit "$rc"
