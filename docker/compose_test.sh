#!/usr/bin/env bash
# make compose-test: docker-compose.yml started for real, on this machine's Docker engine.
#
#  1. images: the project's (docker compose build) on a Python + torch base, and PostgreSQL. By default
#     the public ones (pytorch/pytorch, postgres:16); where they cannot be pulled, local stand-ins
#     (docker/offline/: a Debian image made by debootstrap, torch from the Python registry, Debian's
#     PostgreSQL 15). HPO_BASE_IMAGE / HPO_POSTGRES_IMAGE name others; HPO_OFFLINE_BASES=1 forces the stand-ins.
#  2. `docker compose up --wait`: postgres, storage-init, dashboard, ray-head, one ray-worker (CPU only:
#     docker/compose.cpu.yml), all healthy.
#  3. the dashboard's API on its loopback port: 401 without the token, 200 with it.
#  4. `docker compose run --rm sweep hpo sweep ...` (docker/compose_test.yaml: 8 trials, 2 at a time, random
#     weights), which must run on the cluster (RAY_ADDRESS), not on a Ray of its own: every trial's node is
#     the ray-worker's. Mid-sweep, `docker kill` the worker container, wait for its trials to fail, then
#     `docker start` it: the sweep must still reach its target and exit 0. Whether the killed trials were
#     retried is reported (not required).
#  5. `hpo status`, and `hpo export` to /work/out, which must land on this machine.
#  6. `docker compose down -v`, also on failure or Ctrl-C; nothing of the project is left behind.
#
# Everything goes to a log (HPO_COMPOSE_TEST_LOG, default /tmp/hpo-compose-test-<time>.log). Needs Docker
# with Compose v2.24+, python3, and for the offline stand-ins root and debootstrap. Exit code 0 when every
# check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

LOG=${HPO_COMPOSE_TEST_LOG:-/tmp/hpo-compose-test-$(date +%Y%m%d-%H%M%S).log}
exec > >(tee "$LOG") 2>&1
START=$SECONDS
step() { printf '\n[%s +%4ds] == %s\n' "$(date +%T)" $((SECONDS - START)) "$*"; }
say() { printf '[%s +%4ds] %s\n' "$(date +%T)" $((SECONDS - START)) "$*"; }
die() {
  say "FAIL: $*"
  exit 1
}

PROJECT=${HPO_COMPOSE_TEST_PROJECT:-hpo-compose-test}
STUDY=compose-test
N_TRIALS=$(sed -n 's/^ *n_trials: *\([0-9]*\).*/\1/p' docker/compose_test.yaml)
PUBLIC_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
PUBLIC_POSTGRES=postgres:16
DEBIAN_IMAGE=local/debian:bookworm
TORCH_IMAGE=local/hpo-torch:2.14.1
POSTGRES_STANDIN=local/postgres:15

say "log: $LOG"

DOCKERD_PID= # a dockerd this run started, stopped again at the end
STACK=0      # 1 once compose may have created something: down -v at the end
WORK=
SWEEP_PID=
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  if [ -n "$SWEEP_PID" ]; then kill "$SWEEP_PID" 2>/dev/null || true; fi
  if [ "$STACK" = 1 ]; then
    step "docker compose down -v"
    if [ "$rc" != 0 ]; then
      say "logs of the stack, last lines of each service:"
      "${DC[@]}" --profile sweep logs --no-color --tail 40 2>&1 | sed 's/^/  /' || true
    fi
    "${DC[@]}" --profile sweep down -v --remove-orphans --timeout 20 2>&1 | sed 's/^/  /' || true
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    [ -z "$left" ] || say "left behind: $left"
  fi
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
  if [ -n "$DOCKERD_PID" ]; then
    step "stopping the dockerd this run started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  fi
  step "done in $((SECONDS - START)) s: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)"); log $LOG"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "tools"
if ! docker version >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
  # a machine where Docker is installed but not running as a service (a CI container): start it for this run
  say "no Docker engine answers: starting dockerd (its log: ${LOG%.log}-dockerd.log), stopped again at the end"
  dockerd >"${LOG%.log}-dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
fi
docker version --format 'Docker engine {{.Server.Version}}, client {{.Client.Version}}' || die "no Docker engine answers"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' is installed (Compose v2.24+)"
fi
version=$("${COMPOSE[@]}" version --short | sed 's/^v//')
say "Compose $version"
python3 - "$version" <<'EOF' || die "Compose $version is older than 2.24 (docker/compose.cpu.yml uses !reset)"
import sys
major, minor = (int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 24) else 1)
EOF

# --------------------------------------------------------------------------------------------------
step "base images"
have() { docker image inspect "$1" >/dev/null 2>&1; }
offline=${HPO_OFFLINE_BASES:-auto}
if [ -n "${HPO_BASE_IMAGE:-}" ] && [ -n "${HPO_POSTGRES_IMAGE:-}" ]; then
  offline=0
elif [ "$offline" = auto ]; then
  offline=1
  if have "$PUBLIC_BASE" && have "$PUBLIC_POSTGRES"; then
    offline=0
  elif timeout 120 docker pull -q "$PUBLIC_POSTGRES" >/dev/null 2>&1; then
    offline=0
  fi
fi
if [ "$offline" = 1 ]; then
  say "public images cannot be pulled: local stand-ins (docker/offline/)"
  if ! have "$DEBIAN_IMAGE"; then
    command -v debootstrap >/dev/null || die "$DEBIAN_IMAGE is missing and debootstrap is not installed"
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    rootfs=$(mktemp -d /var/tmp/hpo-debootstrap.XXXXXX)
    say "debootstrap bookworm from ${mirror:-http://deb.debian.org/debian}"
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    tar -C "$rootfs" -c . | docker import - "$DEBIAN_IMAGE"
    rm -rf "$rootfs"
  fi
  if ! have "$TORCH_IMAGE"; then
    ctx=$(mktemp -d)
    cp "${HPO_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/host-ca.crt"
    say "building $TORCH_IMAGE (torch from the Python registry: a few minutes, about 6 GB)"
    docker build -q -f docker/offline/torch-base.Dockerfile --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
      -t "$TORCH_IMAGE" "$ctx"
    rm -rf "$ctx"
  fi
  if ! have "$POSTGRES_STANDIN"; then
    say "building $POSTGRES_STANDIN"
    docker build -q -f docker/offline/postgres.Dockerfile --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
      -t "$POSTGRES_STANDIN" docker/offline
  fi
  export HPO_BASE_IMAGE=$TORCH_IMAGE HPO_POSTGRES_IMAGE=$POSTGRES_STANDIN
fi
export HPO_BASE_IMAGE=${HPO_BASE_IMAGE:-$PUBLIC_BASE} HPO_POSTGRES_IMAGE=${HPO_POSTGRES_IMAGE:-$PUBLIC_POSTGRES}
say "HPO_BASE_IMAGE=$HPO_BASE_IMAGE HPO_POSTGRES_IMAGE=$HPO_POSTGRES_IMAGE"

# --------------------------------------------------------------------------------------------------
step "settings"
WORK=$(mktemp -d /tmp/hpo-compose-test.XXXXXX)
mkdir -p "$WORK/out" "$WORK/data"
chmod 0777 "$WORK/out" # the containers' user (uid 1000) writes the export there
secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DASHBOARD_PORT=$(free_port)
export HPO_DASHBOARD_TOKEN
HPO_DASHBOARD_TOKEN=$(secret)
ENV_FILE=$WORK/env
umask 077
cat >"$ENV_FILE" <<EOF
POSTGRES_PASSWORD=$(secret)
HPO_DASHBOARD_TOKEN=$HPO_DASHBOARD_TOKEN
RAY_AUTH_TOKEN=$(secret)
DASHBOARD_PORT=$DASHBOARD_PORT
RAY_DASHBOARD_PORT=$(free_port)
HPO_CONFIG=$REPO/docker/compose_test.yaml
HPO_STUDY=$STUDY
HPO_OUT_DIR=$WORK/out
HPO_DATA_DIR=$WORK/data
HPO_IMAGE=${HPO_IMAGE:-hpo:compose-test}
HPO_BASE_IMAGE=$HPO_BASE_IMAGE
HPO_POSTGRES_IMAGE=$HPO_POSTGRES_IMAGE
RAY_SHM_SIZE=1gb
EOF
umask 022
say "env file $ENV_FILE (secrets fresh for this run, not shown); project $PROJECT"
DC=("${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" -f docker-compose.yml -f docker/compose.cpu.yml)
STACK=1
BASE="http://127.0.0.1:$DASHBOARD_PORT"
probe() { python3 docker/compose_probe.py "$@"; }
# The health status of container $1 once it is $2, or the last seen after 2 minutes of polling.
wait_health() {
  local status=
  for _ in $(seq 1 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$1")
    [ "$status" = "$2" ] && break
    sleep 2
  done
  echo "$status"
}


# --------------------------------------------------------------------------------------------------
step "docker compose build"
"${DC[@]}" config --quiet || die "the compose files do not resolve"
"${DC[@]}" build storage-init 2>&1 | tail -n 20

step "docker compose up --wait"
up_start=$SECONDS
"${DC[@]}" up -d --wait --wait-timeout 300 || die "the stack did not become healthy"
say "stack up and healthy in $((SECONDS - up_start)) s"
"${DC[@]}" ps --format 'table {{.Service}}\t{{.Status}}\t{{.Ports}}'

step "dashboard API on 127.0.0.1:$DASHBOARD_PORT"
probe auth "$BASE" || die "the dashboard's token check"

# --------------------------------------------------------------------------------------------------
step "sweep on the cluster: docker compose run --rm sweep hpo sweep /work/$STUDY.yaml"
sweep_start=$SECONDS
(
  set -o pipefail
  "${DC[@]}" run --rm -T sweep hpo sweep "/work/$STUDY.yaml" 2>&1 | sed -u 's/^/  sweep| /'
) &
SWEEP_PID=$!

# Kill the worker while trials run, once at least one has completed.
killed=0
deadline=$((SECONDS + 900))
while kill -0 "$SWEEP_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
  counts=$(probe counts "$BASE" "$STUDY" 2>/dev/null || echo "?")
  if [[ $counts == *Complete=* && $counts == *Running=* ]]; then
    worker=$("${DC[@]}" ps -q ray-worker)
    say "trials: $counts: docker kill the ray-worker ($worker)"
    docker kill "$worker" >/dev/null
    killed=1
    break
  fi
  sleep 1
done
[ "$killed" = 1 ] || die "the sweep ended (or timed out) before the worker could be killed mid-trial"
before_fail=$([[ $counts =~ Fail=([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 0)
for _ in $(seq 1 120); do
  counts=$(probe counts "$BASE" "$STUDY" 2>/dev/null || echo "?")
  [[ $counts == *Fail=* ]] && break
  sleep 1
done
say "trials after the kill: $counts (failed before it: $before_fail)"
sleep 5
say "the killed worker, before docker start: $(docker inspect -f 'running={{.State.Running}} exit={{.State.ExitCode}} restarts={{.RestartCount}}' "$worker") (restart: unless-stopped does not bring back a container that docker kill stopped)"
say "docker start the ray-worker"
docker start "$worker" >/dev/null

sweep_rc=0
wait "$SWEEP_PID" || sweep_rc=$?
SWEEP_PID=
say "sweep exited $sweep_rc after $((SECONDS - sweep_start)) s"
[ "$sweep_rc" = 0 ] || die "the sweep exited $sweep_rc"

# --------------------------------------------------------------------------------------------------
step "the study, read from the dashboard's API"
probe trials "$BASE" "$STUDY" >"$WORK/trials.json"
python3 - "$WORK/trials.json" "$N_TRIALS" <<'EOF' || die "the study's trials"
import json, sys
data = json.load(open(sys.argv[1]))
target = int(sys.argv[2])
for t in data["trials"]:
    extra = {k: v for k, v in t.items() if k not in ("number", "state", "node")}
    print(f"  trial {t['number']:>2} {t['state']:<9} node={t.get('node', '-')} {extra if extra else ''}")
counts = data["counts"]
print(f"  counts: {counts}")
finished = counts.get("Complete", 0) + counts.get("Pruned", 0)
failed = [t for t in data["trials"] if t["state"] == "Fail"]
retried = [t for t in failed if t.get("retried_by") not in (None, "", "null")]
retries = [t for t in data["trials"] if t.get("retry_of") not in (None, "", "null")]
print(f"  target {target}: {finished} finished (Complete + Pruned); {len(failed)} failed, "
      f"{len(retried)} of them retried ({len(retries)} retry trials)")
problems = []
if finished < target:
    problems.append(f"the study has {finished} finished trials, fewer than its target {target}")
if not failed:
    problems.append("no trial failed: the worker was not killed mid-trial")
if counts.get("Running", 0):
    problems.append(f"{counts['Running']} trials are still RUNNING after the sweep exited")
nodes = {t.get("node") for t in data["trials"] if t["state"] == "Complete"}
print(f"  nodes of the completed trials: {sorted(map(str, nodes))}")
if None in nodes or not nodes:
    problems.append("completed trials without a node")
for p in problems:
    print(f"  problem: {p}")
sys.exit(1 if problems else 0)
EOF
# the trials ran in the worker container, not in the sweep's: their node's host name is the worker's
worker_host=$(docker inspect -f '{{.Config.Hostname}}' "$worker")
say "ray-worker's host name: $worker_host"
python3 - "$WORK/trials.json" "$worker_host" <<'EOF' || die "trials ran outside the ray-worker container"
import json, sys
data = json.load(open(sys.argv[1]))
host = sys.argv[2]
off = [t["number"] for t in data["trials"] if t["state"] == "Complete" and json.loads(t["node"]).get("host") != host]
print(f"  completed trials whose node is not the ray-worker: {off or 'none'}")
sys.exit(1 if off else 0)
EOF

step "hpo status and hpo export through the sweep service"
"${DC[@]}" run --rm -T -e COLUMNS=160 sweep hpo status --study "$STUDY" >"$WORK/status.txt" 2>&1 || {
  cat "$WORK/status.txt"
  die "hpo status --study $STUDY"
}
grep -v '^ *Container ' "$WORK/status.txt" | sed 's/^/  /'
"${DC[@]}" run --rm -T sweep hpo export --study "$STUDY" -o /work/out/best.yaml >"$WORK/export.txt" 2>&1 || {
  cat "$WORK/export.txt"
  die "hpo export --study $STUDY"
}
grep -v '^ *Container ' "$WORK/export.txt" | sed 's/^/  /'
[ -s "$WORK/out/best.yaml" ] || die "hpo export's /work/out/best.yaml did not reach $WORK/out on this machine"
say "exported: $WORK/out/best.yaml ($(wc -l <"$WORK/out/best.yaml") lines)"
sed 's/^/  | /' "$WORK/out/best.yaml" | head -n 30

step "health after the sweep"
for svc in postgres dashboard ray-head ray-worker; do
  cid=$("${DC[@]}" ps -q "$svc")
  say "$svc: $(docker inspect -f '{{.State.Health.Status}}' "$cid")"
done

step "the dashboard's health check, with its database stopped"
"${DC[@]}" stop postgres 2>&1 | grep -v '^ *Container ' || true
dashboard=$("${DC[@]}" ps -q dashboard)
health=$(wait_health "$dashboard" unhealthy)
say "dashboard without its database: $health; its last probes:"
docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}' "$dashboard" | grep . | tail -n 2 | sed 's/^/  probe: /'
[ "$health" = unhealthy ] || die "the dashboard stayed $health with its database stopped"
"${DC[@]}" start postgres 2>&1 | grep -v '^ *Container ' || true
health=$(wait_health "$dashboard" healthy)
say "dashboard with its database back: $health"
[ "$health" = healthy ] || die "the dashboard did not recover once its database was back"
say "PASS: every check"
