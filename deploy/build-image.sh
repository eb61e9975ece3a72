#!/usr/bin/env bash
# Builds the wgagent container image from deploy/Containerfile without pulling anything from a
# registry: a static (musl) wgagent and a static busybox on an empty base.
#
#   deploy/build-image.sh [--tag NAME] [--tool buildah|podman|docker] [--binary PATH]
#                         [--busybox PATH] [--no-shell]
#
# Needs: the Rust target x86_64-unknown-linux-musl (`rustup target add x86_64-unknown-linux-musl`)
# and a C compiler for it (Debian: musl-tools) unless --binary is given; a static busybox
# (Debian: busybox-static) unless --no-shell; and one of buildah, podman or docker.
# Storage options come from the tool's own configuration (e.g. CONTAINERS_STORAGE_CONF).
# Prints the image name on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=""
tool=""
binary=""
busybox=""
shell=1
while (($#)); do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --tool) tool="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --busybox) busybox="$2"; shift 2 ;;
    --no-shell) shell=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "build-image.sh: $*" >&2; exit 1; }

# A static binary: no program interpreter (PT_INTERP) in its ELF headers.
is_static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }

if [ -z "$tool" ]; then
  for t in buildah podman docker; do
    if command -v "$t" >/dev/null 2>&1; then tool="$t"; break; fi
  done
  [ -n "$tool" ] || die "none of buildah, podman, docker is installed (Debian: apt-get install buildah)"
fi

if [ -z "$binary" ]; then
  target=x86_64-unknown-linux-musl
  rustup target list --installed 2>/dev/null | grep -qx "$target" ||
    die "the Rust target $target is not installed (rustup target add $target)"
  echo "building wgagent for $target (profile container)" >&2
  binary=$(cargo build --locked --profile container --target "$target" --bin wgagent \
    --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [ -n "$binary" ] || die "cargo did not report the wgagent executable"
fi
[ -x "$binary" ] || die "$binary is not an executable"
is_static "$binary" || die "$binary is dynamically linked; the image has no C library"

if ((shell)); then
  if [ -z "$busybox" ]; then
    busybox=$(command -v busybox || true)
    [ -n "$busybox" ] || die "no busybox for the image's shell (Debian: apt-get install busybox-static), or pass --no-shell"
  fi
  is_static "$busybox" || die "$busybox is dynamically linked (Debian: apt-get install busybox-static)"
fi

version=$("$binary" --version | awk '{print $2}')
[ -n "$tag" ] || tag="wgagent:$version"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/wgagent-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
# The parents of the agent-owned directories exist before those are copied in, so that COPY
# --chown does not hand them to the agent's user too.
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/wgagent" "$root/var/lib" "$root/run" \
  "$root/home" "$root/tmp" "$ctx/home" "$ctx/state" "$ctx/uapi"
install -m 0755 "$binary" "$root/usr/local/bin/wgagent"
if ((shell)); then
  install -m 0755 "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
fi
ln -s ../run "$root/var/run"
chmod 1777 "$root/tmp"
chmod 0755 "$root/etc/wgagent"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
wgagent:x:65532:65532:wgagent:/home/wgagent:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
wgagent:x:65532:
nogroup:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"
cp deploy/Containerfile "$ctx/Containerfile"

echo "building $tag with $tool" >&2
case "$tool" in
  buildah) buildah bud --isolation chroot --format oci --build-arg "VERSION=$version" -t "$tag" -f "$ctx/Containerfile" "$ctx" >&2 ;;
  podman) podman build --format oci --build-arg "VERSION=$version" -t "$tag" -f "$ctx/Containerfile" "$ctx" >&2 ;;
  docker) docker build --build-arg "VERSION=$version" -t "$tag" -f "$ctx/Containerfile" "$ctx" >&2 ;;
  *) die "unknown tool $tool" ;;
esac
echo "$tag"
