# Helpers shared by the benchmark scripts (sourced). Needs $work (a scratch directory).

# Runs "$@" (stdout/stderr discarded) and prints "<wall s> <cpu s> <peak RSS MiB>": CPU is
# user + system of the command and its children; RSS is its largest process's.
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.monotonic() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.3f} {r.ru_utime + r.ru_stime:.3f} {r.ru_maxrss / 1024:.1f}")
PY
}

# Starts a dockerd with its own empty data root (a fresh CI runner's engine) and sets
# $fresh to its DOCKER_HOST. A global, not output: a command substitution would run it in a
# subshell and lose the PID. Stop them all with stop_dockerds.
bench_daemons=()
n_daemons=0
fresh=
fresh_dockerd() {
  n_daemons=$((n_daemons + 1))
  local d="$work/d$n_daemons"
  mkdir -p "$d"
  dockerd --host "unix://$d/s.sock" --data-root "$d/data" --exec-root "$d/x" --pidfile "$d/pid" \
    --iptables=false --bridge=none >"$d/log" 2>&1 &
  bench_daemons+=($!)
  for _ in $(seq 120); do
    docker -H "unix://$d/s.sock" info >/dev/null 2>&1 && break
    sleep 0.25
  done
  fresh="unix://$d/s.sock"
}
stop_dockerds() {
  local p
  for p in "${bench_daemons[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bench_daemons[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
}

# Layer digests of an image in a loopback registry, one per line.
layers() { skopeo inspect --tls-verify=false "docker://$1" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["Layers"]))'; }
