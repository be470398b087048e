# What the example scripts share; sourced by them from the repository root.

wait_for_line() { # file prefix -> the rest of the first line starting with prefix
  for _ in $(seq 1 200); do
    line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "${line#"$2"}"; return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}
