#!/usr/bin/env bash
# Build the server image, run it for real and check it over HTTP, then remove what it made.
#
#   server/docker-smoke.sh [--debootstrap] [--keep-image]
#
# 1. a Docker daemon: the one $DOCKER_HOST / the default socket answers, else one started here
#    (dockerd --storage-driver=vfs, its own data root under a temp folder, no bridge: host networking);
# 2. the base image: $BASE_IMAGE (default python:3.11-slim, from a registry), or with --debootstrap one made from
#    Debian's packages (debootstrap bookworm + python3 + venv, `docker import`; the root file system is cached in
#    ~/.cache/musicprod/docker/ so the next run skips debootstrap);
# 3. `docker build --network host -f server/Dockerfile` from a context of the package sources only, with this
#    machine's pip settings passed in (`pip config list`: index, extra index, find-links, CA bundle; local folders
#    are served to the build on 127.0.0.1 for its duration) and the CPU torch wheel when a find-links folder has it;
# 4. a fixture experiment made inside the image (a random LoRA adapter on the prepared base model + champion.json);
# 5. the container serving it with the runs dir mounted read-only and MUSICPROD_API_KEY set; checks: /ready,
#    /generate, /v1/chat/completions streaming, a bad request (400), no key and a wrong key (401), the mount is
#    read-only;
# 6. clean-up (also on failure): container, image (unless --keep-image), the daemon this script started (by its
#    pid) and its state, the temp folders.
#
# Prints each step's wall time and one PASS/FAIL line per check; exits 0 only if every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEBOOTSTRAP=0 KEEP_IMAGE=0
for arg in "$@"; do
  case "$arg" in
    --debootstrap) DEBOOTSTRAP=1 ;;
    --keep-image) KEEP_IMAGE=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "docker-smoke: unknown argument $arg" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d /tmp/musicprod-docker-smoke.XXXXXX)
IMAGE=musicprod-server:smoke
CONTAINER=musicprod-smoke-$$
PORT=${SMOKE_PORT:-18765}
KEY=smoke-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
CACHE=${MUSICPROD_CACHE:-$HOME/.cache/musicprod}/docker
PYTHON=${PYTHON:-python3}
T0=$(date +%s)
DOCKERD_PID="" HTTP_PIDS=() FAILED=0 CHECKS=0
step() { printf '[docker-smoke %5ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
check() {  # check NAME COMMAND...: one PASS/FAIL line
  local name=$1; shift
  CHECKS=$((CHECKS + 1))
  if "$@"; then step "PASS $name"; else step "FAIL $name"; FAILED=$((FAILED + 1)); fi
}

cleanup() {
  local rc=$?
  set +e
  step "clean-up"
  if [ -n "${DOCKER_READY:-}" ]; then
    docker rm -f "$CONTAINER" >/dev/null 2>&1
    [ "$KEEP_IMAGE" = 1 ] || [ -n "$DOCKERD_PID" ] || docker rmi -f "$IMAGE" >/dev/null 2>&1
  fi
  for pid in "${HTTP_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  if [ -n "$DOCKERD_PID" ]; then  # ours: stop it by its pid, then drop its whole state
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
    # containerd-shim/containerd children of our daemon (found by the exec root path, never by name alone)
    for pid in $(pgrep -f "$WORK/" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    # every mount the daemon left under $WORK (the vfs data root, the network namespace under exec/), deepest first
    for m in $(awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
  fi
  rm -rf "$WORK"
  step "done: $CHECKS checks, $FAILED failed, total $(( $(date +%s) - T0 )) s"
  exit $(( rc != 0 ? rc : FAILED != 0 ))
}
trap cleanup EXIT
trap "exit 143" TERM INT  # so a stopped run still cleans up

# ---- 1. daemon ------------------------------------------------------------------------------------------------
if docker info >/dev/null 2>&1 && [ -z "${SMOKE_OWN_DAEMON:-}" ]; then
  step "using the running Docker daemon ($(docker info -f '{{.ServerVersion}} {{.Driver}}'))"
else
  command -v dockerd >/dev/null || { echo "docker-smoke: no daemon answers and dockerd is not installed (apt-get install docker.io)" >&2; exit 2; }
  step "starting dockerd (vfs, data root $WORK/docker)"
  dockerd --storage-driver=vfs --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "unix://$WORK/docker.sock" --bridge=none --iptables=false --ip6tables=false >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$WORK/docker.sock"
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; kill -0 "$DOCKERD_PID" || break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log" >&2; echo "docker-smoke: dockerd did not start" >&2; exit 1; }
fi
DOCKER_READY=1

# ---- 2. base image --------------------------------------------------------------------------------------------
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
if [ "$DEBOOTSTRAP" = 1 ]; then
  BASE_IMAGE=musicprod-base:bookworm
  ROOTFS_TAR="$CACHE/debian-bookworm-python3.tar"
  if [ ! -f "$ROOTFS_TAR" ]; then
    command -v debootstrap >/dev/null || { echo "docker-smoke: --debootstrap needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
    step "debootstrap bookworm (minbase + python3, venv, CA certificates)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    mkdir -p "$CACHE"
    tar -C "$WORK/rootfs" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$WORK/rootfs"
  fi
  step "docker import $ROOTFS_TAR -> $BASE_IMAGE"
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
fi

# ---- 3. build -------------------------------------------------------------------------------------------------
serve_dir() {  # serve_dir DIR -> prints http://127.0.0.1:PORT (a static file server for the build's duration)
  local dir=$1 port
  port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >/dev/null 2>&1 &
  HTTP_PIDS+=($!)
  for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
  echo "http://127.0.0.1:$port"
}
local_path() {  # a file:// URL or a plain path -> the path; anything else -> empty
  case "$1" in file://*) echo "${1#file://}" ;; /*) echo "$1" ;; *) echo "" ;; esac
}
pip_setting() { "$PYTHON" -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'$/\1/p" | tail -1; }

BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
FIND_LINKS=() EXTRA_INDEX=() TORCH_WHEEL=""
for value in $(pip_setting find-links); do
  path=$(local_path "$value")
  if [ -n "$path" ] && [ -d "$path" ]; then
    FIND_LINKS+=("$(serve_dir "$path")/")
    ls "$path"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 && TORCH_WHEEL=1
  elif [ -z "$path" ]; then FIND_LINKS+=("$value"); fi
done
for value in $(pip_setting extra-index-url); do
  path=$(local_path "$value")
  if [ -n "$path" ] && [ -d "$path" ]; then  # relative links (../../files/x.whl) resolve under the parent
    EXTRA_INDEX+=("$(serve_dir "$(dirname "$path")")/$(basename "$path")")
  elif [ -z "$path" ]; then EXTRA_INDEX+=("$value"); fi
done
INDEX_URL=$(pip_setting index-url)
[ -n "$INDEX_URL" ] && BUILD_ARGS+=(--build-arg "PIP_INDEX_URL=$INDEX_URL")
[ ${#FIND_LINKS[@]} -gt 0 ] && BUILD_ARGS+=(--build-arg "PIP_FIND_LINKS=${FIND_LINKS[*]}")
[ ${#EXTRA_INDEX[@]} -gt 0 ] && BUILD_ARGS+=(--build-arg "PIP_EXTRA_INDEX_URL=${EXTRA_INDEX[*]}")
TRUSTED=$(pip_setting trusted-host)
[ -n "$TRUSTED" ] && BUILD_ARGS+=(--build-arg "PIP_TRUSTED_HOST=$TRUSTED")
CERT=$(pip_setting cert)
if [ -n "$CERT" ] && [ -f "$CERT" ]; then  # a TLS-intercepting proxy's CA: fetched by the install step only
  mkdir -p "$WORK/ca" && cp "$CERT" "$WORK/ca/ca.pem"
  BUILD_ARGS+=(--build-arg "PIP_CERT_URL=$(serve_dir "$WORK/ca")/ca.pem")
fi
if [ -n "$TORCH_WHEEL" ]; then  # the local CPU wheel, not the CUDA build an index may serve under 2.13.0
  BUILD_ARGS+=(--build-arg "TORCH_INDEX=" --build-arg "TORCH_SPEC=torch==2.13.0+cpu")
fi

step "build context: package sources only"
mkdir -p "$WORK/context"
for p in pyproject.toml constraints.txt README.md harness trainers reports export server benchmarks; do
  cp -r "$REPO/$p" "$WORK/context/"
done
find "$WORK/context" -name __pycache__ -prune -exec rm -rf {} +
step "docker build --network host ${BUILD_ARGS[*]}"
docker build --network host -f "$WORK/context/server/Dockerfile" -t "$IMAGE" "${BUILD_ARGS[@]}" "$WORK/context" \
  >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; echo "docker-smoke: build failed" >&2; exit 1; }
for pid in "${HTTP_PIDS[@]}"; do kill "$pid" 2>/dev/null; done; HTTP_PIDS=()
step "image built: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"

# ---- 4. fixture experiment ------------------------------------------------------------------------------------
mkdir -p "$WORK/runs" && chmod 777 "$WORK/runs"  # the container writes it as its own user (uid 10001)
step "fixture experiment: a random LoRA adapter on the prepared base model, made inside the image"
docker run --rm --network none -v "$WORK/runs:/out" --entrypoint python "$IMAGE" -c '
import json, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
base = "/opt/musicprod/models/smollm2-135m-instruct"
torch.manual_seed(0)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                       LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
model.save_pretrained("/out/smoke/hf-lora/adapter")
decoding = {"do_sample": False, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0, "max_new_tokens": 24, "dtype": "bfloat16", "merge_adapter": True}
json.dump({"experiment": "smoke", "system": "hf-lora", "base_model": "smollm2-135m-instruct",
           "base_model_path": base, "adapter_path": "runs/smoke/hf-lora/adapter", "scores": {},
           "decoding": decoding, "rule": "docker smoke fixture"}, open("/out/smoke/champion.json", "w"))
' >"$WORK/fixture.log" 2>&1 || { tail -20 "$WORK/fixture.log" >&2; exit 1; }

# ---- 5. serve and check ---------------------------------------------------------------------------------------
step "docker run: runs dir read-only, API key set, port $PORT"
docker run -d --name "$CONTAINER" --network host -e MUSICPROD_API_KEY="$KEY" -v "$WORK/runs:/app/runs:ro" \
  "$IMAGE" --experiment smoke --port "$PORT" >/dev/null
URL="http://127.0.0.1:$PORT"
READY=""
for _ in $(seq 600); do
  code=$(curl -s -o "$WORK/ready.json" -w '%{http_code}' "$URL/ready" || true)
  [ "$code" = 200 ] && { READY=1; break; }
  [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER")" = true ] || break
  sleep 1
done
[ -n "$READY" ] || docker logs --tail 30 "$CONTAINER" >&2
check "/ready answers 200 once the model is loaded" test -n "$READY"

post() {  # post PATH BODY [AUTH] -> writes the body to $WORK/out.json, prints the status code
  local auth=()
  [ -n "${3:-}" ] && auth=(-H "Authorization: Bearer $3")
  curl -s -o "$WORK/out.json" -w '%{http_code}' -X POST "$URL$1" -H 'Content-Type: application/json' "${auth[@]}" -d "$2"
}
json() { jq -e "$1" "$WORK/out.json" >/dev/null; }
MESSAGES='[{"role":"user","content":"What does a limiter do?"}]'
code=$(post /generate "{\"messages\":$MESSAGES,\"max_new_tokens\":16}" "$KEY")
check "/generate with the key: 200, text, model smoke/hf-lora ($(jq -c '{text, usage}' "$WORK/out.json" 2>/dev/null | cut -c1-120))" \
  eval '[ "$code" = 200 ] && json ".text | length > 0" && json ".model == \"smoke/hf-lora\"" && json ".usage.completion_tokens > 0"'
code=$(curl -s -N -o "$WORK/sse.txt" -w '%{http_code}' -X POST "$URL/v1/chat/completions" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' -d "{\"model\":\"smoke/hf-lora\",\"messages\":$MESSAGES,\"max_tokens\":8,\"stream\":true}")
check "/v1/chat/completions stream: 200, chunks, data: [DONE]" \
  eval '[ "$code" = 200 ] && grep -q "chat.completion.chunk" "$WORK/sse.txt" && tail -2 "$WORK/sse.txt" | grep -q "data: \[DONE\]"'
code=$(post /generate '{"messages":[],"max_new_tokens":"many"}' "$KEY")
check "bad request: 400 with an invalid_request_error body" eval '[ "$code" = 400 ] && json ".error.type == \"invalid_request_error\""'
code=$(post /generate "{\"messages\":$MESSAGES}")
check "no API key: 401" test "$code" = 401
code=$(post /generate "{\"messages\":$MESSAGES}" "wrong-$KEY")
check "wrong API key: 401" test "$code" = 401
check "runs dir is read-only inside the container" eval '! docker exec "$CONTAINER" touch /app/runs/smoke/written 2>/dev/null'
