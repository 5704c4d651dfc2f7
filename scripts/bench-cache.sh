#!/usr/bin/env bash
# The registry as the layer cache (issue 14), in one run on this machine: a generated closure
# (default 92 packages, 200 MB unpacked) served by testkit's fake Builder on loopback
# (`hab-oci-testkit serve-builder --log`), and the real registry of scripts/services.sh behind
# a byte-counting TCP proxy (every byte in and out of the registry, manifests included).
#
#   runner 1   empty caches: export + push v1 (every hart downloaded)         = the baseline
#   (a)        a fresh runner (empty layer, artifact and key caches), v2 = a new release of
#              the primary: harts downloaded, bytes read from / sent to the registry
#   (b)        a fresh runner, v3 = lib002 rebuilt with its dependents
#   (c)        like (a) with local harts (--source, every hart present; run before (b)):
#              packages decoded, against a cold export + push of the same harts to an empty
#              repository
#   check      the image of (a) equals (manifest digest) the one an all-local runner builds
#              without a cache source
#   (d)        docker legacy and BuildKit (`--cache-from` NAME:latest) on the same closure and
#              registry, pushing through hab-oci's pusher, a fresh daemon cache each time
#              (images and build cache removed); ENGINES=0 skips them
#
#   bash scripts/bench-cache.sh
#   PACKAGES=40 SIZE_MB=60 ENGINES=0 bash scripts/bench-cache.sh     # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
packages=${PACKAGES:-92}
size=${SIZE_MB:-200}
engines=${ENGINES:-1}
. scripts/services.sh
cargo build --release --quiet -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
tk=$PWD/target/release/hab-oci-testkit
work=$(mktemp -d /tmp/hab-oci-bench-cache.XXXX)
srv= proxy=
cleanup() {
  [ -n "$srv" ] && kill "$srv" 2>/dev/null
  [ -n "$proxy" ] && kill "$proxy" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A TCP proxy in front of the registry counting bytes each way; `nc`-free control: a
# connection to the control port gets "UP DOWN" (bytes to / from the registry) and closes.
cat >"$work/proxy.py" <<'PY'
import asyncio, sys
listen, ctl, upstream = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
count = {"up": 0, "down": 0}
async def pipe(r, w, key):
    try:
        while data := await r.read(65536):
            count[key] += len(data)
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def client(r, w):
    ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(r, uw, "up"), pipe(ur, w, "down"))
async def control(r, w):
    w.write(f"{count['up']} {count['down']}\n".encode()); await w.drain(); w.close()
async def main():
    a = await asyncio.start_server(client, "127.0.0.1", listen)
    b = await asyncio.start_server(control, "127.0.0.1", ctl)
    async with a, b:
        await asyncio.gather(a.serve_forever(), b.serve_forever())
asyncio.run(main())
PY
port=$((20000 + RANDOM % 20000))
python3 "$work/proxy.py" "$port" $((port + 1)) 5000 &
proxy=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
counters() { python3 -c "import socket; s=socket.create_connection(('127.0.0.1', $((port + 1)))); print(s.recv(100).decode().strip())"; }
reg=127.0.0.1:$port/bench-$$-$(date +%s)

# A fresh seed: content the registry has never seen.
seed=$(date +%s)
gen=(--out "$work/c" --packages "$packages" --size-mb "$size" --seed "$seed" --block-kb 8192)
"$tk" gen "${gen[@]}" >/dev/null
serve() { # (re)starts the fake Builder on everything in $work/c
  [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null || true
  rm -f "$work/url" "$work/bldr.log"
  "$tk" serve-builder --dir "$work/c" --channel stable --log "$work/bldr.log" >"$work/url" &
  srv=$!
  for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.1; done
  url=$(head -n 1 "$work/url")
}
serve

now() { date +%s.%N; }
# runner NAME ARGS...: a fresh runner (empty caches) exports gen/app with ARGS; prints
# "wall downloads bytes_up bytes_down decoded manifest_digest uploaded_blobs".
runner() {
  local name=$1; shift
  local d=$work/$name
  rm -rf "$d" && mkdir -p "$d"
  cp "$work/bldr.log" "$work/bldr.before" 2>/dev/null || : >"$work/bldr.before"
  local c0 c1 s e
  c0=$(counters); s=$(now)
  (cd "$d" && env HAB_OCI_CACHE="$d/cache" HAB_CACHE_KEY_PATH="$d/keys" HAB_CACHE_ARTIFACT_PATH="$d/artifacts" \
    "$bin" -q export --no-supervisor --report "$d/report.json" "$@" gen/app >"$d/out" 2>"$d/err") \
    || { cat "$d/err" >&2; exit 1; }
  e=$(now); c1=$(counters)
  sleep 0.3 # the Builder log is rewritten every 100 ms
  local downloads
  downloads=$(( $(grep -c '^Download 200' "$work/bldr.log" 2>/dev/null || true) - $(grep -c '^Download 200' "$work/bldr.before" || true) ))
  python3 - "$d/report.json" "$s" "$e" "$c0" "$c1" "$downloads" "$d/cache/metadata-v2" <<'PYR'
import json, os, sys
r = json.load(open(sys.argv[1]))
up0, down0 = map(int, sys.argv[4].split()); up1, down1 = map(int, sys.argv[5].split())
meta = sys.argv[7]
decoded = len(os.listdir(meta)) if os.path.isdir(meta) else 0
push = r.get("push") or {}
print(f"{float(sys.argv[3]) - float(sys.argv[2]):.2f} {sys.argv[6]} {up1 - up0} {down1 - down0} {decoded} "
      f"{r['manifest_digest']} {push.get('blobs_uploaded', '-')}")
PYR
}
row() { # label wall baseline downloads up down decoded blobs
  printf '%-58s %7s %6s %9s %12s %12s %8s %6s\n' "$1" "$2" \
    "$(python3 -c "print(f'{$2/$3:.2f}')")" "$4" "$5" "$6" "$7" "$8"
}
header() {
  printf '%-58s %7s %6s %9s %12s %12s %8s %6s\n' step "wall s" ratio downloads "bytes up" "bytes down" decoded blobs
}

bldr=(--url "$url" --channel stable)
echo "closure: $packages packages, $size MB unpacked (seed $seed); registry $reg (real docker-registry behind a byte-counting proxy); Builder (fake) on loopback"
echo "bytes up/down: every byte to/from the registry through the proxy (HTTP headers, manifests and configs included)"
echo "decoded: packages whose payload this runner decoded; blobs: blobs the push uploaded"
echo
header
read -r w1 d1 u1 dn1 dec1 m1 b1 < <(runner r1 "${bldr[@]}" --registry-url "$reg" --push-image)
row "runner 1: v1, empty caches, Builder (baseline)" "$w1" "$w1" "$d1" "$u1" "$dn1" "$dec1" "$b1"

"$tk" rebuild "${gen[@]}" --package app --release 20240202000000 >/dev/null
serve; bldr=(--url "$url" --channel stable)
read -r wa da ua dna deca ma ba < <(runner ra "${bldr[@]}" --registry-url "$reg" --push-image)
row "(a) fresh runner, v2 = new primary release, Builder" "$wa" "$w1" "$da" "$ua" "$dna" "$deca" "$ba"
read -r _ _ _ _ _ ml _ < <(runner all-local --source "$work/c" --registry-url "$reg" -o "oci:$work/all-local-img")
if [ "$ma" = "$ml" ]; then same="equal"; else same="DIFFERENT ($ml)"; fi

# (c) on a copy of the closure as it is now (latest = v2), so that the new release sits on the
# same libraries as v2; (b) then continues from the original directory.
cp -a "$work/c" "$work/c4"
gen4=(--out "$work/c4" "${gen[@]:2}")
"$tk" rebuild "${gen4[@]}" --package app --release 20240404000000 >/dev/null
read -r wc0 dc0 uc0 dnc0 decc0 _ bc0 < <(runner rc0 --source "$work/c4" --registry-url "$reg-cold" --push-image)
row "local harts: cold export + push to an empty repository" "$wc0" "$wc0" "$dc0" "$uc0" "$dnc0" "$decc0" "$bc0"
read -r wc dc uc dnc decc _ bc < <(runner rc --source "$work/c4" --registry-url "$reg" --push-image)
row "(c) fresh runner, v4 = new primary release, local harts" "$wc" "$wc0" "$dc" "$uc" "$dnc" "$decc" "$bc"

rebuilt=$("$tk" rebuild "${gen[@]}" --package lib002 --release 20240303000000 | wc -l)
serve; bldr=(--url "$url" --channel stable)
read -r wb db ub dnb decb mb bb < <(runner rb "${bldr[@]}" --registry-url "$reg" --push-image)
row "(b) fresh runner, v3 = lib002 + $((rebuilt - 1)) dependents rebuilt, Builder" "$wb" "$w1" "$db" "$ub" "$dnb" "$decb" "$bb"

if [ "$engines" = 1 ]; then
  fresh_daemon() {
    docker image ls -q --filter "reference=127.0.0.1:$port/*" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
    docker builder prune -af >/dev/null 2>&1 || true
  }
  "$tk" rebuild "${gen[@]}" --package app --release 20240505000000 >/dev/null
  # BuildKit through Debian's docker 20.10 client (a newer client needs the buildx plugin).
  buildkit_client=()
  [ -x /usr/bin/docker ] && buildkit_client=(--engine-binary /usr/bin/docker)
  for builder in legacy buildkit; do
    case $builder in legacy) next=20240606000000; client=() ;; *) next=20240707000000; client=("${buildkit_client[@]}") ;; esac
    fresh_daemon
    read -r we0 _ ue0 dne0 _ _ be0 < <(runner "e-$builder-1" --source "$work/c" --engine docker "${client[@]}" --docker-builder "$builder" --registry-url "$reg-$builder" --push-image)
    "$tk" rebuild "${gen[@]}" --package app --release "$next" >/dev/null
    fresh_daemon
    read -r we de ue dne _ _ be < <(runner "e-$builder-2" --source "$work/c" --engine docker "${client[@]}" --docker-builder "$builder" --registry-url "$reg-$builder" --push-image)
    row "(d) docker $builder, fresh daemon, first image" "$we0" "$w1" "-" "$ue0" "$dne0" "-" "$be0"
    row "(d) docker $builder, fresh daemon, new primary release" "$we" "$w1" "-" "$ue" "$dne" "-" "$be"
  done
fi
echo
echo "image of (a) vs an all-local runner without cache source: $same (manifest $ma)"
