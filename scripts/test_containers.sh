#!/usr/bin/env bash
# The hospital containers, built and run for real: this script starts its own Docker daemon (data root and
# socket in a temporary folder, stopped by PID on every exit), makes stand-in base images from Debian's
# packages (no image registry is reachable here; the Dockerfiles keep their standard bases), serves the local
# torch file to the builds on loopback, builds the site, lab and dashboard images, and runs the compose
# federation (PostgreSQL, the lab, three hospitals, the dashboard) through a tiny SecAgg+/DP study with a
# hospital and the lab restarted mid-study (scripts/containers/federation_check.py checks it all from outside).
#
#   scripts/test_containers.sh            # as root (or with passwordless sudo); installs docker.io, docker-compose,
#                                         # debootstrap and chromium from Debian when missing
# Prints each image's size and build time, the study's wall time and rounds. Keeps nothing but its report
# (runs/containers/: report.json, dashboard screenshots, container logs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${CARDIACFL_CONTAINER_OUT:-$REPO/runs/containers}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/setup_env.sh
# Debian's client beside the daemon it ships with (another docker CLI on PATH may be newer than this dockerd)
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker)

KEEP=${CARDIACFL_CONTAINER_WORK:-}
WORK=${KEEP:-$(mktemp -d /tmp/cardiacfl-containers.XXXXXX)}
mkdir -p "$WORK"
DOCKERD_PID=""
INDEX_PID=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$DOCKERD_PID" ]; then
    # everything below ran in this daemon only: its containers, then the daemon itself, by PID
    ids=$(DOCKER_HOST=unix://$WORK/docker.sock "$DOCKER" ps -aq 2>/dev/null)
    [ -n "$ids" ] && DOCKER_HOST=unix://$WORK/docker.sock "$DOCKER" rm -f $ids >/dev/null 2>&1
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
  fi
  [ -n "$INDEX_PID" ] && kill "$INDEX_PID" 2>/dev/null
  # the daemon's overlay mounts go with it; anything left mounted under the work folder is unmounted first
  grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ -z "$KEEP" ] && rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

echo "== Docker daemon (data root $WORK/data)"
dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" -H "unix://$WORK/docker.sock" \
  --iptables=false --ip-forward=false --ip-masq=false >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$WORK/docker.sock
for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
"$DOCKER" info >/dev/null || { tail -20 "$WORK/dockerd.log"; exit 1; }

seconds() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$(seconds) - $1:.0f}')"; }

build() {  # build IMAGE_TAG LOG ARGS...: quiet, the log's tail on failure
  local tag=$1 log=$2
  shift 2
  "$DOCKER" build --network host -t "$tag" "$@" >"$log" 2>&1 || { tail -40 "$log"; echo "building $tag failed" >&2; return 1; }
}

echo "== stand-in base images from Debian's packages"
t0=$(seconds)
if ! "$DOCKER" image inspect local/bookworm:minbase >/dev/null 2>&1; then
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$WORK/rootfs" -c . | "$DOCKER" import -c 'CMD ["/bin/bash"]' - local/bookworm:minbase >/dev/null
  rm -rf "$WORK/rootfs"
fi
mkdir -p "$WORK/standin"
cp scripts/containers/*standin.Dockerfile scripts/containers/postgres-entrypoint.sh "$WORK/standin/"
cp "$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)" "$WORK/standin/ca-bundle.crt"
build python:3.11.11-slim-bookworm "$WORK/build-python.log" -f "$WORK/standin/python-standin.Dockerfile" "$WORK/standin"
build postgres:15-bookworm "$WORK/build-postgres.log" -f "$WORK/standin/postgres-standin.Dockerfile" "$WORK/standin"
echo "base images in $(elapsed "$t0") s"

echo "== the local torch file and its dependencies, served on loopback as a package index"
# What TORCH_INDEX serves for real (download.pytorch.org carries torch's own dependencies too): pip takes torch
# from the machine's local file and its dependencies from the registry, one folder per normalised project name.
rm -rf "$WORK/index" && mkdir -p "$WORK/wheels" "$WORK/index"
.venv/bin/python -m pip download -q torch==2.13.0 -d "$WORK/wheels" >"$WORK/torch-download.log" 2>&1 \
  || { tail -20 "$WORK/torch-download.log"; exit 1; }
for wheel in "$WORK"/wheels/*.whl; do
  project=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  mkdir -p "$WORK/index/$project" && ln -sf "$wheel" "$WORK/index/$project/"
done
INDEX_PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python3 -m http.server "$INDEX_PORT" --bind 127.0.0.1 --directory "$WORK/index" >/dev/null 2>&1 &
INDEX_PID=$!

echo "== images"
mkdir -p "$OUT"
: >"$WORK/builds.tsv"
for image in site lab dashboard; do
  t0=$(seconds)
  build "cardiacfl-$image:latest" "$OUT/build-$image.log" --build-arg "TORCH_INDEX=http://127.0.0.1:$INDEX_PORT/" \
    -f "docker/$image.Dockerfile" .
  took=$(elapsed "$t0")
  size=$("$DOCKER" image inspect -f '{{.Size}}' "cardiacfl-$image:latest")
  printf '%s\t%s\t%s\n' "$image" "$took" "$size" >>"$WORK/builds.tsv"
  echo "cardiacfl-$image: built in $took s, $((size / 1000000)) MB"
done
echo "shared layers: $("$DOCKER" system df --format '{{.Type}} {{.Size}} (reclaimable {{.Reclaimable}})' | head -1)"

echo "== the federation"
.venv/bin/python scripts/containers/federation_check.py --docker "$DOCKER" --work "$WORK/federation" --out "$OUT" \
  --builds "$WORK/builds.tsv"
