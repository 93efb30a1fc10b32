#!/usr/bin/env bash
# The cpu image built where neither an image registry nor PyPI is reachable from the build (docker/README.md,
# "Air-gapped build"). Three steps, each skipped when its result is already there:
#
#   docker/build_offline.sh base     a Debian base image made with debootstrap or mmdebstrap (root, a mirror)
#   docker/build_offline.sh wheels   the wheels of the cpu image, for the base image's Python (needs pip's index)
#   docker/build_offline.sh image    the cpu target on that base, from those wheels (no network at all) [ARGS...]
#   docker/build_offline.sh [all]    the three in order [ARGS...]
#   docker/build_offline.sh constraints   pins the newest versions pyproject.toml allows, for the base image's
#                                    Python, in docker/constraints-cpu.txt (needs pip's index; commit the file)
#
# ARGS go to `docker build` (e.g. --build-arg S2D_WEIGHTS=...). Settings, from the environment:
#   S2D_BASE_IMAGE   the base image's tag                          local/s2d-debian:bookworm
#   S2D_IMAGE        the image's tag                               s2d:cpu
#   S2D_WHEELS       the wheel folder (moved between machines)     docker/wheels/cpu
#   DEBIAN_SUITE, DEBIAN_MIRROR                                    bookworm, http://deb.debian.org/debian
#   PYTHON           the host Python whose pip downloads wheels    python3
#   DOCKER           the docker CLI                                the first on PATH that builds with BuildKit
#   S2D_BOOTSTRAP    debootstrap or mmdebstrap                     mmdebstrap if installed, else debootstrap
#   S2D_REBUILD      1: redo the base image and the wheels
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${S2D_BASE_IMAGE:-local/s2d-debian:bookworm}
IMAGE=${S2D_IMAGE:-s2d:cpu}
WHEELS=${S2D_WHEELS:-$ROOT/docker/wheels/cpu}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
CONTEXT_WHEELS=$ROOT/docker/wheels/cpu  # where the Dockerfile's cpu-build stage looks for them
IMAGE_EXTRAS="cpu triton"  # what the Dockerfile's cpu-build stage installs
CONSTRAINTS=$ROOT/docker/constraints-cpu.txt  # the versions it installs (the Dockerfile reads the same file)
PATH=$PATH:/usr/sbin:/sbin  # debootstrap's place, not on every user's PATH
# python3-venv: the images make their environment with `python3 -m venv` (ensurepip comes with it).
PACKAGES=python3,python3-venv

CLEANUP=()
trap 'rm -rf "${CLEANUP[@]}"' EXIT
trap 'exit 143' INT TERM  # through the EXIT trap: no wheels left behind in the checkout

log() { printf 'build_offline: %s\n' "$*" >&2; }

# BuildKit builds this Dockerfile sooner than the classic builder (stages side by side, cheap copies between them).
# CLIs from 23 on use it only through the buildx plugin; older ones (Debian's docker.io, 20.10) have it built in.
buildkit() {
  "$1" buildx version >/dev/null 2>&1 && return 0
  local version
  version=$("$1" version --format '{{.Client.Version}}' 2>/dev/null) || return 1
  [ "${version%%.*}" -lt 23 ] 2>/dev/null
}
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  for cli in $(type -ap docker); do
    if buildkit "$cli"; then DOCKER=$cli; break; fi
  done
fi
if [ -z "${DOCKER_BUILDKIT:-}" ]; then
  if buildkit "$DOCKER"; then DOCKER_BUILDKIT=1; else DOCKER_BUILDKIT=0; fi
fi
export DOCKER_BUILDKIT
docker() { "$DOCKER" "$@"; }

base() {
  if [ "${S2D_REBUILD:-0}" != 1 ] && docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base image $BASE is there"
    return
  fi
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 2; }
  local dir tool
  dir=$(mktemp -d "${TMPDIR:-/tmp}/s2d-rootfs.XXXXXX")
  CLEANUP+=("$dir")
  # mmdebstrap when installed: the same system as debootstrap makes, sooner (apt downloads, dpkg installs at once).
  tool=$(command -v "${S2D_BOOTSTRAP:-mmdebstrap}" || command -v debootstrap) \
    || { log "neither mmdebstrap nor debootstrap: apt-get install -y debootstrap"; exit 2; }
  log "$(basename "$tool") $SUITE ($PACKAGES) from $MIRROR"
  # An imported image has no configuration: without PATH, the Dockerfile's `ENV PATH=/opt/s2d/bin:$PATH` would be
  # the venv alone. The same PATH and LANG as the official python images.
  rootfs_tar "$tool" "$dir" 2>"$dir/log" | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "$(basename "$tool") --variant=minbase --include=$PACKAGES $SUITE" - "$BASE" >/dev/null \
    || { tail -20 "$dir/log" >&2; exit 1; }
  log "imported $BASE"
}

# The base system as a tar stream on stdout, without the downloaded packages and index files (`apt-get update`
# fetches the index again).
rootfs_tar() {
  local tool=$1 dir=$2
  if [ "$(basename "$tool")" = mmdebstrap ]; then
    # Its merged-usr hook lays out /usr as debootstrap does; without it mmdebstrap installs usrmerge (and perl).
    local hooks=() merged=/usr/share/mmdebstrap/hooks/merged-usr
    [ ! -d "$merged" ] || hooks=(--hook-dir="$merged")
    "$tool" --variant=minbase --include="$PACKAGES" "${hooks[@]}" "$SUITE" - "$MIRROR"  # it removes both itself
  else
    "$tool" --variant=minbase --include="$PACKAGES" "$SUITE" "$dir/root" "$MIRROR" >&2
    rm -rf "$dir"/root/var/cache/apt/archives/*.deb "$dir"/root/var/lib/apt/lists/*
    tar -C "$dir/root" -c .
  fi
}

# The image's own Python and C library decide which wheels fit, not the host's: sets TARGET ("3.11 2.36 x86_64")
# and PIP_TARGET (pip's options for wheels of that Python and platform).
image_python() {
  docker image inspect "$BASE" >/dev/null 2>&1 || { log "no image $BASE: run '$0 base' first"; exit 2; }
  local version glibc arch
  TARGET=$(docker run --rm --network none "$BASE" python3 -c \
    'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1], platform.machine())')
  read -r version glibc arch <<<"$TARGET"
  PIP_TARGET=(--only-binary=:all: --python-version "$version" --implementation cp --abi "cp${version/./}"
    --platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
  for minor in $(seq 5 "${glibc#2.}"); do PIP_TARGET+=(--platform "manylinux_2_${minor}_$arch"); done
}

# The image's requirements into a new temporary file, named in REQUIREMENTS; arguments go to requirements.py.
requirements_file() {
  REQUIREMENTS=$(mktemp "${TMPDIR:-/tmp}/s2d-requirements.XXXXXX")
  CLEANUP+=("$REQUIREMENTS")
  "$PYTHON" "$ROOT/docker/requirements.py" --build-system "$@" $IMAGE_EXTRAS >"$REQUIREMENTS"
}

wheels() {
  image_python
  local wanted
  requirements_file --constraints="$CONSTRAINTS"
  # What the folder was made for: the image's Python, the requirements and their pins. Anything else is made again.
  wanted=$(printf '%s\n' "$TARGET"; cat "$REQUIREMENTS" "$CONSTRAINTS")
  if [ "${S2D_REBUILD:-0}" != 1 ] && [ "$(cat "$WHEELS/.complete" 2>/dev/null)" = "$wanted" ]; then
    log "wheels in $WHEELS are there"
    return
  fi
  log "wheels for CPython $TARGET -> $WHEELS"
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$WHEELS" "${PIP_TARGET[@]}" -r "$REQUIREMENTS"
  printf '%s\n' "$wanted" >"$WHEELS/.complete"
}

constraints() {
  image_python
  local report
  requirements_file
  report=$(mktemp "${TMPDIR:-/tmp}/s2d-resolve.XXXXXX")
  CLEANUP+=("$report" "$report.target")
  # Resolved, not downloaded: pip reads the packages' metadata for the image's Python and platform.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --dry-run --ignore-installed --report "$report" \
    --target "$report.target" "${PIP_TARGET[@]}" -r "$REQUIREMENTS"
  "$PYTHON" - "$report" "$TARGET" "$IMAGE_EXTRAS" >"$CONSTRAINTS" <<'PY'
import json, sys
report, target, extras = sys.argv[1:]
pins = sorted((p["metadata"]["name"].lower().replace("_", "-"), p["metadata"]["version"])
              for p in json.load(open(report))["install"])
print(f"# The cpu image's packages (pyproject.toml: base + {extras.replace(' ', ' + ')} + build system), resolved for")
print(f"# CPython {target} (the base image's Python, C library, machine) by `docker/build_offline.sh constraints`.")
print("# The Dockerfile's cpu-build stage and the air-gapped wheels install exactly these. Refresh: run that, commit.")
print("\n".join(f"{name}=={version}" for name, version in pins))
PY
  log "pinned $(grep -vc '^#' "$CONSTRAINTS") packages for CPython $TARGET in $CONSTRAINTS"
}

image() {
  [ -f "$WHEELS/.complete" ] || { log "no wheels in $WHEELS: run '$0 wheels' first"; exit 2; }
  if [ "$(realpath -m "$WHEELS")" != "$(realpath -m "$CONTEXT_WHEELS")" ]; then
    # Wheels kept elsewhere go into the build context for this build only: left there, they would make every later
    # cpu build of this checkout install from them.
    [ ! -e "$CONTEXT_WHEELS" ] || { log "$CONTEXT_WHEELS is in the way (remove it or point S2D_WHEELS at it)"; exit 2; }
    CLEANUP+=("$CONTEXT_WHEELS")
    cp -al "$WHEELS" "$CONTEXT_WHEELS" 2>/dev/null || cp -a "$WHEELS" "$CONTEXT_WHEELS"
  fi
  log "docker build --target cpu on $BASE -> $IMAGE ($DOCKER, DOCKER_BUILDKIT=$DOCKER_BUILDKIT)"
  docker build --target cpu --build-arg PYTHON_IMAGE="$BASE" -t "$IMAGE" "$@" \
    "$ROOT"
}

step=${1:-all}
[ $# -eq 0 ] || shift
case "$step" in
  base) base ;;
  wheels) wheels ;;
  image) image "$@" ;;
  all) base && wheels && image "$@" ;;
  constraints) constraints ;;
  *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
