#!/usr/bin/env bash
# The whole test suite of lanebus, from a fresh clone on a fresh machine:
# installs what is missing, then runs the gates (format, lints) and every
# test (unit, integration, property, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- what the suite needs -----------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: this suite needs a Rust toolchain (rustup)" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        log "installing rustup component ${component}"
        rustup component add "${component}"
    fi
done

# The NATS tests (feature `nats`) run against a real nats-server that they
# start themselves on loopback; Debian's package has JetStream built in and
# puts it in /usr/sbin, which a non-root PATH may lack.
export PATH="${PATH}:/usr/sbin"
if ! command -v nats-server >/dev/null 2>&1; then
    log "installing nats-server (Debian package)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "ERROR: nats-server is not installed and this is not root: run" >&2
        echo "       'apt-get install -y nats-server' as root, then this script again" >&2
        exit 1
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; }; then
        echo "ERROR: could not install nats-server with apt-get: the NATS tests cannot run" >&2
        exit 1
    fi
    if ! command -v nats-server >/dev/null 2>&1; then
        echo "ERROR: apt-get installed nats-server but it is not on PATH" >&2
        exit 1
    fi
fi
echo "nats-server: $(nats-server --version)"

# The Kafka tests (feature `kafka`) run against a real Apache Kafka broker
# that they start themselves on loopback (tests/common/kafka.rs), from Maven
# Central's jars on a JDK 17+: scripts/kafka.sh fetches the jars once with
# Maven into .cache/kafka. rdkafka builds librdkafka from source and links
# the system OpenSSL (libssl-dev, found through pkg-config).
kafka_packages=()
command -v java >/dev/null 2>&1 || kafka_packages+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || kafka_packages+=(maven)
command -v pkg-config >/dev/null 2>&1 || kafka_packages+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then
    kafka_packages+=(libssl-dev)
fi
if [ "${#kafka_packages[@]}" -gt 0 ]; then
    log "installing ${kafka_packages[*]} (Debian packages) for the Kafka tests"
    if [ "$(id -u)" -ne 0 ]; then
        echo "ERROR: ${kafka_packages[*]} missing and this is not root: run" >&2
        echo "       'apt-get install -y ${kafka_packages[*]}' as root, then this script again" >&2
        exit 1
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${kafka_packages[@]}"; }; then
        echo "ERROR: could not install ${kafka_packages[*]} with apt-get: the Kafka tests cannot run" >&2
        exit 1
    fi
fi
echo "java: $(java -version 2>&1 | head -n 1)"
log "Kafka broker jars (scripts/kafka.sh fetch: Maven, once)"
if ! kafka_lib="$(scripts/kafka.sh fetch)"; then
    echo "ERROR: could not fetch the Kafka broker's jars (the reason is above): the Kafka tests cannot run" >&2
    exit 1
fi
echo "kafka jars: ${kafka_lib} ($(find "${kafka_lib}" -name '*.jar' | wc -l) jars)"

# --- gates ---------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy (all targets, all features) -D warnings"
cargo clippy --locked --all-targets --all-features -- -D warnings

# --- tests ---------------------------------------------------------------------
# Every feature but `loom`: with `loom` on, the lib's test binary also holds
# the loom models, which a debug build runs for well over ten minutes; they
# run in the loom step below, in release. A new feature goes in this list.
test_features="nats,kafka,bench-internals"
log "cargo test --features ${test_features} (unit, integration, property, doc, NATS, Kafka)"
cargo test --locked --features "${test_features}"

log "loom models (cargo test --features loom, release for speed)"
cargo test --locked --release --features loom --lib loom_models

log "all green"
