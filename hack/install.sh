#!/usr/bin/env bash
# hack/install.sh — installs everything ftwin-migrate needs on a Debian 12 host, idempotently.
#
#   criu >= 4.2      (Debian forky; bookworm's 3.17 and trixie's 4.1 cannot run here, see
#                     ../shared/ENVIRONMENT.md)
#   containerd 2.3 LTS (built from its Go module into /usr/local/bin; Debian has no 2.3),
#   runc >= 1.2 (Debian forky's 1.3)
#   iptables         (CRIU's network lock), iproute2 (lab networking), util-linux (nsenter/unshare)
#   Apache Kafka 4.x (KRaft broker classpath and the command-line tools, assembled from Maven
#                     Central into $FTWIN_KAFKA_HOME, default /opt/ftwin-migrate/kafka-VERSION)
#
# A rerun changes nothing and takes seconds: each step checks what is there first.
# Exit status is non-zero, with a line naming what is missing, when a check fails after install.
set -euo pipefail

CRIU_MIN="4.2"
# containerd 2.3 is the long-term-support line (supported to 2028; 1.7 ended in September 2026).
# Debian forky's 2.1 is past its end of life, so the daemon and its runc shim are built from the
# containerd Go module at this exact version (the module proxy serves it; CGO off, no btrfs).
CONTAINERD_VERSION="2.3.7"
CONTAINERD_BIN="${FTWIN_CONTAINERD_BIN:-/usr/local/bin}"
RUNC_MIN="1.2"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$(dirname "$0")/kafka/pom.xml")"
FTWIN_KAFKA_HOME="${FTWIN_KAFKA_HOME:-/opt/ftwin-migrate/kafka-${KAFKA_VERSION}}"
HERE="$(cd "$(dirname "$0")" && pwd)"

log()  { printf 'install: %s\n' "$*" >&2; }
die()  { printf 'install: FAILED: %s\n' "$*" >&2; exit 1; }
# version_ge A B: true when version A >= version B.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

[ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages)"

criu_version()       { criu --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1; }
containerd_version() { "$CONTAINERD_BIN/containerd" --version 2>/dev/null | awk '{print $3}' | sed 's/^v//; s/+.*//'; }
shim_version()       { "$CONTAINERD_BIN/containerd-shim-runc-v2" -v 2>/dev/null | sed -n 's/^ *Version: *v\{0,1\}//p' | sed 's/+.*//' | head -n1; }
runc_version()       { runc --version 2>/dev/null | sed -n 's/^runc version //p' | head -n1; }

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
}
apt_install() { # apt_install [-t SUITE] PKG...
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# 1. Debian suites trixie and forky, pinned low so nothing is taken from them unless asked for.
SOURCES=/etc/apt/sources.list.d/ftwin-migrate.sources
PREFS=/etc/apt/preferences.d/ftwin-migrate
if [ ! -f "$SOURCES" ]; then
  mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "adding Debian suites trixie and forky from $mirror (pinned at priority 100)"
  cat >"$SOURCES" <<SRC
Types: deb
URIs: $mirror
Suites: trixie forky
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_UPDATED=0
fi
if [ ! -f "$PREFS" ]; then
  cat >"$PREFS" <<PIN
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=forky
Pin-Priority: 100
PIN
fi

# 2. Plain tools from the machine's own suite.
need=()
command -v iptables-restore >/dev/null || need+=(iptables)
command -v ip >/dev/null       || need+=(iproute2)
command -v tc >/dev/null       || need+=(iproute2)
command -v nsenter >/dev/null  || need+=(util-linux)
command -v zstd >/dev/null     || need+=(zstd)
command -v kcat >/dev/null     || need+=(kcat)    # a dynamically linked Kafka consumer (librdkafka) for test/e2e/image_test.go
if [ ${#need[@]} -gt 0 ]; then log "installing ${need[*]}"; apt_install "${need[@]}"; fi

# 3. CRIU >= 4.2: trixie first (brings libc6 2.41 that forky's criu needs), then forky.
v="$(criu_version || true)"
if [ -z "$v" ] || ! version_ge "$v" "$CRIU_MIN"; then
  log "installing criu >= $CRIU_MIN (found: ${v:-none})"
  # trixie first: it brings the C library forky's criu needs from trixie rather than forky. When
  # forky's CRIU libraries are already there (criu was removed, its libraries not), trixie's
  # criu cannot be installed beside them, and forky's alone is what is needed.
  apt_install -t trixie criu || log "trixie's criu does not fit beside what is installed; taking forky's directly"
  apt_install -t forky criu
fi

# 4. runc >= 1.2 from forky (1.1 cannot join the time namespace CRIU restores into), and
#    containerd $CONTAINERD_VERSION with its runc shim, built from the Go module. A containerd from
#    Debian (1.7) may linger in /usr/bin: ours in $CONTAINERD_BIN comes first in PATH, and the
#    check at the end makes sure `containerd` resolves to it.
v="$(runc_version || true)"
if [ -z "$v" ] || ! version_ge "$v" "$RUNC_MIN"; then
  log "installing runc >= $RUNC_MIN from forky (found: ${v:-none})"
  apt_install -t forky runc
fi
if [ "$(containerd_version || true)" != "$CONTAINERD_VERSION" ] || [ "$(shim_version || true)" != "$CONTAINERD_VERSION" ]; then
  command -v go >/dev/null || die "go is needed to build containerd $CONTAINERD_VERSION (install Go 1.26, see README)"
  log "building containerd $CONTAINERD_VERSION and containerd-shim-runc-v2 from the Go module (found: $(containerd_version || echo none))"
  gobin="$(mktemp -d)"
  if ! GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS= GOTOOLCHAIN=local go install -tags no_btrfs \
      -ldflags "-X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION -X github.com/containerd/containerd/v2/version.Revision=go-module" \
      "github.com/containerd/containerd/v2/cmd/containerd@v$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" >"$gobin/build.log" 2>&1; then
    cat "$gobin/build.log" >&2
    die "could not build containerd $CONTAINERD_VERSION from github.com/containerd/containerd/v2 (log above)"
  fi
  mkdir -p "$CONTAINERD_BIN"
  install -m 0755 "$gobin/containerd" "$gobin/containerd-shim-runc-v2" "$CONTAINERD_BIN/"
  rm -rf "$gobin"
fi
# containerd-ftwin: the same containerd server (at the version go.mod requires for the client)
# with the ftwin-migrate plugin compiled in (cmd/containerd-ftwin, docs/PLUGIN.md), built from
# this source tree beside containerd. Built into a temporary directory (Go's build cache makes a
# rerun quick) and installed only when it differs from the one in place.
REPO="$(cd "$HERE/.." && pwd)"
if [ -f "$REPO/cmd/containerd-ftwin/main.go" ]; then
  command -v go >/dev/null || die "go is needed to build containerd-ftwin (install Go 1.26, see README)"
  gobin="$(mktemp -d)"
  if ! (cd "$REPO" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local go build -trimpath -tags no_btrfs -o "$gobin/containerd-ftwin" ./cmd/containerd-ftwin) >"$gobin/build.log" 2>&1; then
    cat "$gobin/build.log" >&2
    rm -rf "$gobin"
    die "could not build containerd-ftwin from $REPO/cmd/containerd-ftwin (log above)"
  fi
  if ! cmp -s "$gobin/containerd-ftwin" "$CONTAINERD_BIN/containerd-ftwin"; then
    log "installing containerd-ftwin (containerd with the ftwin-migrate plugin) into $CONTAINERD_BIN"
    mkdir -p "$CONTAINERD_BIN"
    install -m 0755 "$gobin/containerd-ftwin" "$CONTAINERD_BIN/"
  fi
  rm -rf "$gobin"
fi
# The Debian package may start a system containerd; the lab runs its own daemons and needs none.
if [ -n "${FTWIN_STOP_SYSTEM_CONTAINERD:-1}" ] && [ -S /run/containerd/containerd.sock ]; then
  if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
    systemctl stop containerd || true
  fi
fi

# 5. Apache Kafka broker classpath and its command-line tools from Maven Central.
#    The home holds libs/ (every jar of the pom), bin/ (a script per line of
#    broker/kafkatools.txt), config/tools-log4j2.properties and .complete: the Kafka version and
#    the pom's hash it was assembled from. A home whose .complete says anything else (an older
#    Kafka lingering there, a pom since changed, the version-only marker of older installers) is
#    reassembled into libs.new and swapped in, so that no jar of the old set stays on the
#    classpath. Other versions' homes beside the default one are left alone (a checkout of an
#    older tree may still use them) and named.
KAFKA_STAMP="$KAFKA_VERSION pom-sha256=$(sha256sum "$HERE/kafka/pom.xml" | cut -c1-16)"
KAFKA_TOOLS="$HERE/../broker/kafkatools.txt"
have_stamp="$(cat "$FTWIN_KAFKA_HOME/.complete" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//' || true)"
if [ "$have_stamp" != "$KAFKA_STAMP" ]; then
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  if [ -n "$have_stamp" ]; then
    log "upgrading Apache Kafka in $FTWIN_KAFKA_HOME: found ${have_stamp}, want $KAFKA_STAMP"
  fi
  log "assembling Apache Kafka $KAFKA_VERSION into $FTWIN_KAFKA_HOME (Maven Central)"
  mkdir -p "$FTWIN_KAFKA_HOME"
  rm -rf "$FTWIN_KAFKA_HOME/libs.new"
  if ! mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$FTWIN_KAFKA_HOME/libs.new" -DincludeScope=runtime >"$FTWIN_KAFKA_HOME/mvn.log" 2>&1; then
    cat "$FTWIN_KAFKA_HOME/mvn.log" >&2
    rm -rf "$FTWIN_KAFKA_HOME/libs.new"
    die "could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central (log above)"
  fi
  rm -f "$FTWIN_KAFKA_HOME/.complete"
  rm -rf "$FTWIN_KAFKA_HOME/libs"
  mv "$FTWIN_KAFKA_HOME/libs.new" "$FTWIN_KAFKA_HOME/libs"
  echo "$KAFKA_STAMP" >"$FTWIN_KAFKA_HOME/.complete"
fi
# write_if_changed FILE MODE: stdin becomes FILE unless FILE already holds exactly that.
write_if_changed() {
  local tmp; tmp="$(mktemp)"; cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return; fi
  log "writing $1"
  mkdir -p "$(dirname "$1")"; chmod "$2" "$tmp"; mv "$tmp" "$1"
}
if [ -d "$FTWIN_KAFKA_HOME/libs" ]; then
  write_if_changed "$FTWIN_KAFKA_HOME/config/tools-log4j2.properties" 0644 <<'L4J'
# The command-line tools log warnings and errors to stderr, as Kafka's tools-log4j2.yaml does.
status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
L4J
  while read -r script class _; do
    case "$script" in ''|'#'*) continue;; esac
    write_if_changed "$FTWIN_KAFKA_HOME/bin/$script.sh" 0755 <<SH
#!/bin/sh
# $script.sh of Apache Kafka $KAFKA_VERSION, written by ftwin-migrate's hack/install.sh
# (broker/kafkatools.txt). \`ftwin-migrate lab kafka $script ...\` runs it against a lab's broker.
home="\$(cd "\$(dirname "\$0")/.." && pwd)"
exec java \${KAFKA_HEAP_OPTS:--Xmx256m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \\
  -Dlog4j2.configurationFile="\$home/config/tools-log4j2.properties" -cp "\$home/libs/*" $class "\$@"
SH
  done <"$KAFKA_TOOLS"
fi
for other in "$(dirname "$FTWIN_KAFKA_HOME")"/kafka-*; do
  if [ -f "$other/.complete" ] && [ "$other" != "$FTWIN_KAFKA_HOME" ]; then
    log "note: $other ($(head -n1 "$other/.complete" | cut -d' ' -f1)) is not used by this tree; remove it once nothing else does"
  fi
done

# 5b. What the Kafka Streams twin (twins/streams) builds with, from Maven Central, into Maven's
# local repository (MAVEN_REPO if set), so that `make java` and CI build it without fetching.
STREAMS_POM="$HERE/../twins/streams/pom.xml"
MVN_REPO_FLAG=()
[ -n "${MAVEN_REPO:-}" ] && MVN_REPO_FLAG=(-Dmaven.repo.local="$MAVEN_REPO")
STREAMS_MARK="${MAVEN_REPO:-$HOME/.m2/repository}/.ftwin-streams-$(sha256sum "$STREAMS_POM" "$HERE/../twins/streams/hook/pom.xml" "$HERE/../twins/streams/twin/pom.xml" | sha256sum | cut -c1-16)"
if [ -f "$STREAMS_POM" ] && [ ! -f "$STREAMS_MARK" ]; then
  command -v mvn >/dev/null || apt_install maven
  dpkg -s openjdk-17-jdk-headless >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
  log "fetching the Kafka Streams twin's build from Maven Central"
  # install builds the hook jar the twin depends on; the plugins and test dependencies come too.
  if ! mvn -q -B "${MVN_REPO_FLAG[@]}" -f "$STREAMS_POM" -DskipTests install >/tmp/ftwin-streams-mvn.log 2>&1 \
     || ! mvn -q -B "${MVN_REPO_FLAG[@]}" -f "$STREAMS_POM" dependency:go-offline >>/tmp/ftwin-streams-mvn.log 2>&1; then
    cat /tmp/ftwin-streams-mvn.log >&2
    die "could not fetch the Kafka Streams twin's dependencies from Maven Central (log above)"
  fi
  mkdir -p "$(dirname "$STREAMS_MARK")" && touch "$STREAMS_MARK"
fi

# 6. Check what is there now; name whatever is missing.
fail=0
check() { if eval "$2"; then log "ok: $1"; else printf 'install: MISSING: %s\n' "$1" >&2; fail=1; fi; }
v="$(criu_version || true)"
check "criu >= $CRIU_MIN (have ${v:-none})" '[ -n "$v" ] && version_ge "$v" "$CRIU_MIN"'
v="$(containerd_version || true)"
check "containerd $CONTAINERD_VERSION in $CONTAINERD_BIN (have ${v:-none})" '[ "$v" = "$CONTAINERD_VERSION" ]'
check "containerd on PATH is $CONTAINERD_BIN/containerd (have $(command -v containerd || echo none))" '[ "$(command -v containerd)" = "$CONTAINERD_BIN/containerd" ]'
check "containerd-shim-runc-v2 $CONTAINERD_VERSION on PATH (have $(command -v containerd-shim-runc-v2 || echo none))" '[ "$(command -v containerd-shim-runc-v2)" = "$CONTAINERD_BIN/containerd-shim-runc-v2" ] && [ "$(shim_version)" = "$CONTAINERD_VERSION" ]'
if [ -f "$REPO/cmd/containerd-ftwin/main.go" ]; then
  check "containerd-ftwin in $CONTAINERD_BIN" '"$CONTAINERD_BIN/containerd-ftwin" --version >/dev/null 2>&1'
fi
v="$(runc_version || true)"
check "runc >= $RUNC_MIN (have ${v:-none})" '[ -n "$v" ] && version_ge "$v" "$RUNC_MIN"'
check "iptables-restore" 'command -v iptables-restore >/dev/null'
check "tc, ip, nsenter, unshare" 'command -v tc >/dev/null && command -v ip >/dev/null && command -v nsenter >/dev/null && command -v unshare >/dev/null'
check "jlink (a JDK, for the streams twin's image)" 'ls /usr/lib/jvm/*17*/bin/jlink >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/jlink" ]'
check "java >= 17" 'java -version 2>&1 | grep -E "version \"(1[7-9]|[2-9][0-9])" >/dev/null'
check "kafka_2.13-$KAFKA_VERSION.jar in $FTWIN_KAFKA_HOME/libs" '[ -f "$FTWIN_KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" ]'
check "kafka-tools-$KAFKA_VERSION.jar in $FTWIN_KAFKA_HOME/libs, no other Kafka version there" \
  '[ -f "$FTWIN_KAFKA_HOME/libs/kafka-tools-$KAFKA_VERSION.jar" ] && [ -z "$(ls "$FTWIN_KAFKA_HOME/libs" | grep -E "^kafka(_2\.13|-[a-z-]+)-[0-9]" | grep -v -- "-$KAFKA_VERSION\.jar\$")" ]'
check "the Kafka tools' scripts in $FTWIN_KAFKA_HOME/bin" '[ -x "$FTWIN_KAFKA_HOME/bin/kafka-consumer-groups.sh" ]'
[ "$fail" = 0 ] || die "see MISSING lines above"
log "all dependencies present"
