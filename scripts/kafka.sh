#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft: one process that is both
# broker and controller) for lanebus's tests, bench tool and example, run
# from Maven Central's jars on the machine's JDK. Loopback only.
#
#   scripts/kafka.sh fetch            fetch the jars once (idempotent) into
#                                     .cache/kafka/<version>/lib; prints that folder
#   scripts/kafka.sh lib              prints the jars' folder; fails (saying how to
#                                     fetch them) when they are not there
#   scripts/kafka.sh start DIR        writes DIR/broker.properties on free loopback
#                                     ports (first start only), formats DIR/data (first
#                                     start only), starts the broker in the background
#                                     (log: DIR/broker.log), waits until it answers a
#                                     metadata request, prints its bootstrap address
#   scripts/kafka.sh stop DIR         stops it (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh kill DIR         kills it with SIGKILL (a crash; `start DIR`
#                                     brings it back on the same port and storage)
#   scripts/kafka.sh bootstrap DIR    prints the bootstrap address of DIR's config
#   scripts/kafka.sh probe HOST:PORT  one metadata request: exits 0 when a broker
#                                     answers it and lists at least one broker
#
# Used by the Rust test harness (tests/common/kafka.rs), which picks the
# ports and supervises the process itself:
#   scripts/kafka.sh prepare DIR PORT CONTROLLER_PORT   config and format, no start
#   scripts/kafka.sh run DIR          runs the broker in the foreground (exec: the
#                                     caller's child process is the JVM)
#
# Environment: KAFKA_VERSION (default 4.4.0), KAFKA_HEAP (the JVM's -Xmx,
# default 512m), KAFKA_JVM_OPTS (extra JVM options), JAVA (default: $JAVA_HOME/bin/java,
# else `java`), KAFKA_CACHE (default: <repo>/.cache/kafka), KAFKA_READY_WITHIN
# (seconds `start` waits for the first metadata answer, default 120).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${KAFKA_VERSION:-4.4.0}"
cache="${KAFKA_CACHE:-${repo}/.cache/kafka}"
lib="${cache}/${version}/lib"
heap="${KAFKA_HEAP:-512m}"
ready_within="${KAFKA_READY_WITHIN:-120}"
if [ -n "${JAVA:-}" ]; then
    java="${JAVA}"
elif [ -n "${JAVA_HOME:-}" ] && [ -x "${JAVA_HOME}/bin/java" ]; then
    java="${JAVA_HOME}/bin/java"
else
    java="java"
fi

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# --- the jars ---------------------------------------------------------------------

# Copies kafka_2.13 and its run-time dependencies into $lib with Maven, once.
# The copy goes to a scratch folder first and is renamed into place only
# when Maven succeeded, so a half-done fetch is never taken for a whole one.
fetch() {
    if [ -f "${lib}/.complete" ]; then
        echo "${lib}"
        return
    fi
    command -v mvn >/dev/null 2>&1 ||
        die "Maven (mvn) is not installed: it fetches the Kafka jars (apt-get install -y maven)"
    command -v "${java}" >/dev/null 2>&1 ||
        die "no JDK: '${java}' is not on PATH (apt-get install -y openjdk-17-jdk-headless)"
    mkdir -p "${cache}/${version}"
    local scratch="${cache}/${version}/lib.partial.$$"
    rm -rf "${scratch}"
    echo "kafka.sh: fetching org.apache.kafka:kafka_2.13:${version} and its dependencies with Maven" >&2
    if ! mvn -q -B -Dstyle.color=never -f "${repo}/scripts/kafka/pom.xml" \
        -Dkafka.version="${version}" \
        dependency:copy-dependencies \
        -DincludeScope=runtime \
        -DoutputDirectory="${scratch}" >&2; then
        rm -rf "${scratch}"
        die "Maven could not fetch org.apache.kafka:kafka_2.13:${version} (its output is above)"
    fi
    [ -f "${scratch}/kafka_2.13-${version}.jar" ] ||
        die "Maven finished but ${scratch} has no kafka_2.13-${version}.jar"
    touch "${scratch}/.complete"
    rm -rf "${lib}"
    mv "${scratch}" "${lib}"
    echo "${lib}"
}

# Fails, saying how to fix it, when the jars were not fetched.
need_lib() {
    [ -f "${lib}/.complete" ] ||
        die "the Kafka ${version} jars are not fetched (no ${lib}): run 'scripts/kafka.sh fetch' (scripts/test.sh does)"
}

# --- config -----------------------------------------------------------------------

# A port on loopback that nothing listens on. Taken from below Linux's
# ephemeral range so an outgoing connection does not hold it; the broker
# failing to bind is still handled (start picks new ports and tries again).
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        if ! { (exec 3<>"/dev/tcp/127.0.0.1/${port}"); } 2>/dev/null; then
            echo "${port}"
            return
        fi
    done
    die "found no free loopback port in 200 tries"
}

# A Kafka cluster ID: 16 random bytes in URL-safe base64 without padding
# (22 characters), not starting with '-' (which a command line would take
# for an option), as the storage tool's `random-uuid` makes them.
cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        case "${id}" in -*) ;; *)
            echo "${id}"
            return
            ;;
        esac
    done
}

# Writes DIR/broker.properties and DIR/log4j2.properties for the ports.
write_config() {
    local dir="$1" port="$2" controller_port="$3"
    mkdir -p "${dir}/data"
    cat >"${dir}/broker.properties.tmp" <<EOF
# Written by scripts/kafka.sh: one process as broker and controller (KRaft),
# on loopback only.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:${controller_port}
log.dirs=${dir}/data
# One node: every internal topic has one replica and needs one in sync.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
# Tests start consumer groups often: no 3 s wait before the first rebalance.
group.initial.rebalance.delay.ms=0
# A restart after SIGKILL waits until the controller (this same process)
# lets the broker's previous registration lapse: 3 s instead of 9 s. The
# heartbeat goes over loopback within the process, so 500 ms leaves room.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
# Few threads: two cores, and tests run beside the broker.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
EOF
    mv "${dir}/broker.properties.tmp" "${dir}/broker.properties"
    cat >"${dir}/log4j2.properties" <<'EOF'
# Written by scripts/kafka.sh: the broker logs to its standard output, which
# goes to broker.log beside this file.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

# A value of DIR/broker.properties.
config_value() {
    local dir="$1" key="$2"
    sed -n "s/^${key}=//p" "${dir}/broker.properties" | head -n 1
}

bootstrap_of() {
    local dir="$1"
    [ -f "${dir}/broker.properties" ] || die "${dir} has no broker.properties (never started there)"
    config_value "${dir}" advertised.listeners | sed 's|^PLAINTEXT://||'
}

# The JVM's class path and options, shared by the storage tool and the broker.
jvm_args() {
    local dir="$1"
    # shellcheck disable=SC2206 # KAFKA_JVM_OPTS is a list of options
    local extra=(${KAFKA_JVM_OPTS:-})
    printf '%s\n' "-Xmx${heap}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=${dir}/log4j2.properties" \
        ${extra[@]+"${extra[@]}"} -cp "${lib}/*"
}

# Formats DIR/data as a one-node cluster whose only voter is this
# controller (`kafka-storage.sh format --standalone`), unless it already is.
format() {
    local dir="$1"
    if [ -f "${dir}/data/meta.properties" ]; then
        return
    fi
    local args
    mapfile -t args < <(jvm_args "${dir}")
    if ! "${java}" "${args[@]}" kafka.tools.StorageTool format --standalone \
        -t "$(cluster_id)" -c "${dir}/broker.properties" >"${dir}/format.log" 2>&1; then
        cat "${dir}/format.log" >&2
        die "formatting ${dir}/data failed (log above, also in ${dir}/format.log)"
    fi
}

prepare() {
    local dir="$1" port="$2" controller_port="$3"
    need_lib
    mkdir -p "${dir}"
    dir="$(cd "${dir}" && pwd)"
    write_config "${dir}" "${port}" "${controller_port}"
    format "${dir}"
}

# --- the process ------------------------------------------------------------------

pid_of() {
    local dir="$1" pid
    [ -f "${dir}/broker.pid" ] || return 1
    pid="$(cat "${dir}/broker.pid")"
    # Alive, and still our broker (not a reused PID).
    [ -r "/proc/${pid}/cmdline" ] && tr '\0' ' ' <"/proc/${pid}/cmdline" |
        grep -qF "${dir}/broker.properties" || return 1
    echo "${pid}"
}

# One metadata request (Metadata v4, header v1, no topics) on a fresh
# connection; succeeds when the answer carries our correlation ID and lists
# at least one broker.
probe() {
    local host="${1%:*}" port="${1##*:}" answer
    { exec 3<>"/dev/tcp/${host}/${port}"; } 2>/dev/null || return 1
    # size 20 | api_key 3 | version 4 | correlation 7 | client "probe" | topics [] | auto-create false
    printf '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x07\x00\x05probe\x00\x00\x00\x00\x00' >&3 2>/dev/null || {
        exec 3<&- 3>&-
        return 1
    }
    answer="$(timeout 5 head -c 16 <&3 | od -An -v -tx1 | tr -d ' \n')" || true
    exec 3<&- 3>&-
    # size | correlation | throttle_time_ms | number of brokers
    [ "${#answer}" -eq 32 ] && [ "${answer:8:8}" = 00000007 ] && [ "${answer:24:8}" != 00000000 ]
}

run() {
    local dir="$1"
    need_lib
    dir="$(cd "${dir}" && pwd)"
    [ -f "${dir}/data/meta.properties" ] || die "${dir}/data is not formatted: run 'scripts/kafka.sh prepare' or 'start' first"
    local args
    mapfile -t args < <(jvm_args "${dir}")
    exec "${java}" "${args[@]}" kafka.Kafka "${dir}/broker.properties"
}

start() {
    local dir="$1"
    need_lib
    mkdir -p "${dir}"
    dir="$(cd "${dir}" && pwd)"
    if pid="$(pid_of "${dir}")"; then
        die "a broker already runs from ${dir} (pid ${pid}) on $(bootstrap_of "${dir}")"
    fi
    local fresh=0 attempt
    if [ ! -f "${dir}/broker.properties" ]; then
        fresh=1
    fi
    for attempt in 1 2 3 4 5; do
        if [ "${fresh}" = 1 ]; then
            # New ports: the storage records the controller's address, so it
            # is formatted anew with them.
            rm -rf "${dir}/data"
            prepare "${dir}" "$(free_port)" "$(free_port)"
        else
            format "${dir}"
        fi
        local bootstrap args
        bootstrap="$(bootstrap_of "${dir}")"
        mapfile -t args < <(jvm_args "${dir}")
        "${java}" "${args[@]}" kafka.Kafka "${dir}/broker.properties" </dev/null >"${dir}/broker.log" 2>&1 &
        local pid=$!
        echo "${pid}" >"${dir}/broker.pid"
        local deadline=$((SECONDS + ready_within))
        while :; do
            if ! kill -0 "${pid}" 2>/dev/null; then
                wait "${pid}" || true
                if [ "${fresh}" = 1 ] && grep -q "Address already in use" "${dir}/broker.log"; then
                    echo "kafka.sh: a port was taken meanwhile; trying new ports (attempt ${attempt})" >&2
                    continue 2
                fi
                tail -n 40 "${dir}/broker.log" >&2
                die "the broker exited at start on ${bootstrap} (log above, all of it in ${dir}/broker.log)"
            fi
            if probe "${bootstrap}"; then
                echo "${bootstrap}"
                return
            fi
            if [ "${SECONDS}" -ge "${deadline}" ]; then
                kill -KILL "${pid}" 2>/dev/null || true
                tail -n 40 "${dir}/broker.log" >&2
                die "the broker did not answer a metadata request on ${bootstrap} within ${ready_within} s (log above)"
            fi
            sleep 0.1
        done
    done
    die "the broker could not bind free loopback ports in 5 attempts (log: ${dir}/broker.log)"
}

stop() {
    local dir="$1" signal="$2" pid
    dir="$(cd "${dir}" && pwd)"
    if ! pid="$(pid_of "${dir}")"; then
        rm -f "${dir}/broker.pid"
        return
    fi
    kill "-${signal}" "${pid}" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "${pid}" 2>/dev/null; do
        if [ "${SECONDS}" -ge "${deadline}" ]; then
            echo "kafka.sh: the broker (pid ${pid}) did not stop within 30 s of SIG${signal}: killing it" >&2
            kill -KILL "${pid}" 2>/dev/null || true
        fi
        sleep 0.1
    done
    rm -f "${dir}/broker.pid"
}

command="${1:-}"
case "${command}" in
fetch) fetch ;;
lib)
    need_lib
    echo "${lib}"
    ;;
start)
    [ $# -eq 2 ] || usage
    start "$2"
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop "$2" TERM
    ;;
kill)
    [ $# -eq 2 ] || usage
    stop "$2" KILL
    ;;
bootstrap)
    [ $# -eq 2 ] || usage
    bootstrap_of "$2"
    ;;
probe)
    [ $# -eq 2 ] || usage
    probe "$2"
    ;;
prepare)
    [ $# -eq 4 ] || usage
    prepare "$2" "$3" "$4"
    ;;
run)
    [ $# -eq 2 ] || usage
    run "$2"
    ;;
*) usage ;;
esac
