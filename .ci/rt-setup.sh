#!/usr/bin/env bash
# Install, start and seed a local Request Tracker 5 for the live adapter tests.
#
# Usage (as root, on Debian bookworm):
#   .ci/rt-setup.sh          install if needed, start on loopback, seed, write .ci/rt/rt.env
#   .ci/rt-setup.sh stop     stop the server this script started
#
# Idempotent: a second run skips what is already there, and keeps a running
# server and a working token. The server listens on 127.0.0.1 only.
#
# What the tests get (written to $RT_ENV_FILE, default .ci/rt/rt.env, mode 600, git-ignored):
#   TRIAGE_TEST_RT_URL             base URL (REST2 is under /REST/2.0)
#   TRIAGE_TEST_RT_TOKEN           auth token of the triage user
#   TRIAGE_TEST_RT_USER            the triage user's login
#   TRIAGE_TEST_RT_ADMIN_USER      root, used by the tests to create tickets
#   TRIAGE_TEST_RT_ADMIN_PASSWORD
#   TRIAGE_TEST_RT_READONLY_USER / _PASSWORD   may see tickets but change nothing
#   TRIAGE_TEST_RT_QUEUES          comma-separated queue names
#   TRIAGE_TEST_RT_AGENTS          comma-separated agents who may own tickets
#   TRIAGE_TEST_RT_MARKER_FIELD    the "AI Triage" custom field
#   TRIAGE_TEST_RT_TAGS_FIELD      a multi-value custom field for label tags
#
# Settings (environment): RT_PORT (8091), RT_ENV_FILE, RT_STATE_DIR (server log
# and pid), RT_ROOT_PASSWORD, RT_START_TIMEOUT (seconds, 180).
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RT_PORT=${RT_PORT:-8091}
RT_HOST=127.0.0.1
RT_URL="http://${RT_HOST}:${RT_PORT}"
API="${RT_URL}/REST/2.0"
RT_ENV_FILE=${RT_ENV_FILE:-${SCRIPT_DIR}/rt/rt.env}
RT_STATE_DIR=${RT_STATE_DIR:-/var/tmp/helpdesk-triage-rt}
RT_START_TIMEOUT=${RT_START_TIMEOUT:-180}
# A throwaway server on loopback: the password only keeps other local users honest.
RT_ROOT_PASSWORD=${RT_ROOT_PASSWORD:-triage-ci-root-pw}
READONLY_PASSWORD=triage-ci-readonly-pw

PACKAGES=(request-tracker5 rt5-db-sqlite rt5-standalone curl)
RT_SERVER=/usr/share/request-tracker5/libexec/rt-server
SITE_CONFIG=/etc/request-tracker5/RT_SiteConfig.d/90-helpdesk-triage-ci.pm
SERVER_LOG="${RT_STATE_DIR}/rt-server.log"
SERVER_PID="${RT_STATE_DIR}/rt-server.pid"

QUEUES=(General Billing Technical)
MARKER_FIELD="AI Triage"
TAGS_FIELD="AI Labels"
TRIAGE_USER=triage-bot
AGENTS=(agent-anna agent-ben)
READONLY_USER=triage-readonly

STARTED_AT=$(date +%s)
WORK_DIR=$(mktemp -d)
trap 'rm -rf "$WORK_DIR"' EXIT
trap 'fail "line $LINENO: \"$BASH_COMMAND\" exited with $?"' ERR

log() { printf '[rt-setup %3ds] %s\n' "$(($(date +%s) - STARTED_AT))" "$*"; }
fail() {
    printf '[rt-setup] FAILED: %s\n' "$*" >&2
    if [[ -f $SERVER_LOG ]]; then
        printf '[rt-setup] last lines of %s:\n' "$SERVER_LOG" >&2
        tail -n 20 "$SERVER_LOG" >&2 || true
    fi
    exit 1
}

joined() { local IFS=,; echo "$*"; }

# Perl is there wherever RT is, and JSON::PP is part of it.
urlencode() {
    perl -e 'print join "", map { /[A-Za-z0-9._~-]/ ? $_ : sprintf "%%%02X", ord } split //, shift' "$1"
}

json_field() { # FIELD: prints a top-level field of the JSON in $WORK_DIR/body
    perl -MJSON::PP -e 'local $/; my $d = decode_json(<STDIN>); print $d->{$ARGV[0]} // ""' \
        "$1" <"${WORK_DIR}/body"
}

# -- install -----------------------------------------------------------------------------

packages_missing() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || return 0
    done
    return 1
}

install_packages() {
    if ! packages_missing; then
        log "packages already installed"
        return
    fi
    log "installing ${PACKAGES[*]} (a minute or two)"
    export DEBIAN_FRONTEND=noninteractive
    # dbconfig-common creates the SQLite database unattended with these answers.
    debconf-set-selections <<'EOF'
request-tracker5 request-tracker5/dbconfig-install boolean true
request-tracker5 request-tracker5/database-type select sqlite3
request-tracker5 request-tracker5/install-cronjobs boolean false
EOF
    local attempt
    for attempt in 1 2 3; do
        if apt-get update -q >"${WORK_DIR}/apt.log" 2>&1 &&
            apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 \
                -o DPkg::Lock::Timeout=120 "${PACKAGES[@]}" >>"${WORK_DIR}/apt.log" 2>&1; then
            log "packages installed"
            return
        fi
        log "apt-get failed (attempt $attempt of 3); last lines:"
        tail -n 5 "${WORK_DIR}/apt.log"
        sleep $((attempt * 10))
    done
    fail "could not install ${PACKAGES[*]} with apt-get"
}

# -- configure ---------------------------------------------------------------------------

# Returns 0 when the site configuration changed (a running server must restart).
write_site_config() {
    local wanted="${WORK_DIR}/site.pm"
    cat >"$wanted" <<EOF
# Written by helpdesk-triage .ci/rt-setup.sh: a local RT for the adapter tests.
Set(\$WebPath, "");
Set(\$WebDomain, "${RT_HOST}");
Set(\$WebPort, ${RT_PORT});
Set(\$WebBaseURL, "${RT_URL}");
Set(\$LogToSyslog, undef);
Set(\$LogToSTDERR, "warning");
# Notifications (auto-replies, comment copies) go to an mbox file under
# /var/lib/request-tracker5 instead of a mail server.
Set(\$MailCommand, "mbox");
1;
EOF
    if [[ -f $SITE_CONFIG ]] && cmp -s "$wanted" "$SITE_CONFIG"; then
        return 1
    fi
    install -m 0644 "$wanted" "$SITE_CONFIG"
    log "wrote $SITE_CONFIG"
    return 0
}

set_password() { # USER PASSWORD
    # rt-passwd reads the password from standard input (REST2 cannot change one);
    # RT 5.0.3's exits 1 even on success, so its message is what counts.
    local output
    output=$(printf '%s\n%s\n' "$2" "$2" | rt-passwd "$1" 2>&1) || true
    grep -q 'Successfully changed password' <<<"$output" ||
        fail "rt-passwd $1 did not succeed: $(tail -n 1 <<<"$output")"
}

# -- the server --------------------------------------------------------------------------

server_pid() {
    [[ -f $SERVER_PID ]] || return 1
    local pid
    pid=$(<"$SERVER_PID")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

stop_server() {
    local pid
    if pid=$(server_pid); then
        log "stopping rt-server (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
    fi
    rm -f "$SERVER_PID"
}

http_code() { # METHOD PATH [JSON] -> prints the status, body in $WORK_DIR/body
    local method=$1 path=$2 data=${3-}
    local args=(-sS -o "${WORK_DIR}/body" -w '%{http_code}' -X "$method"
        -u "root:${RT_ROOT_PASSWORD}" -H 'Content-Type: application/json' "${API}${path}")
    if [[ -n $data ]]; then args+=(--data "$data"); fi
    curl "${args[@]}" 2>/dev/null || echo 000
}

port_in_use() { curl -s -o /dev/null --max-time 2 "${RT_URL}/" 2>/dev/null; }

start_server() {
    mkdir -p "$RT_STATE_DIR"
    if server_pid >/dev/null; then
        log "rt-server already running (pid $(server_pid))"
    else
        if port_in_use; then fail "port ${RT_PORT} is taken by another program: set RT_PORT"; fi
        log "starting rt-server on ${RT_URL} (log: ${SERVER_LOG})"
        # --host keeps it on loopback; three workers are plenty for the tests.
        setsid nohup "$RT_SERVER" --host "$RT_HOST" --port "$RT_PORT" --max-workers 3 \
            >>"$SERVER_LOG" 2>&1 </dev/null &
        echo $! >"$SERVER_PID"
    fi
    local deadline=$((SECONDS + RT_START_TIMEOUT)) code
    while ((SECONDS < deadline)); do
        code=$(http_code GET /rt)
        case $code in
            200) log "REST2 answers"; return ;;
            401) fail "REST2 refuses root's password: is another RT on port ${RT_PORT}?" ;;
        esac
        server_pid >/dev/null || fail "rt-server exited during start-up"
        sleep 1
    done
    fail "REST2 did not answer within ${RT_START_TIMEOUT}s"
}

check_loopback_only() {
    command -v ss >/dev/null || return 0
    local listeners
    listeners=$(ss -ltnH "sport = :${RT_PORT}" | awk '{print $4}')
    [[ -n $listeners ]] || fail "nothing listens on port ${RT_PORT}"
    if grep -qv "^${RT_HOST}:${RT_PORT}\$" <<<"$listeners"; then
        fail "rt-server listens beyond loopback: ${listeners//$'\n'/ }"
    fi
}

# -- seed through REST2 ------------------------------------------------------------------

expect() { # WHAT CODE ALLOWED...
    local what=$1 code=$2
    shift 2
    local ok
    for ok in "$@"; do [[ $code == "$ok" ]] && return 0; done
    fail "$what: HTTP $code $(head -c 300 "${WORK_DIR}/body" 2>/dev/null)"
}

ensure_queue() {
    local name=$1 code
    code=$(http_code GET "/queue/$(urlencode "$name")")
    if [[ $code == 404 ]]; then
        code=$(http_code POST /queue "{\"Name\": \"$name\", \"Description\": \"helpdesk-triage tests\"}")
        expect "creating queue $name" "$code" 201
        log "created queue $name"
    else
        expect "looking up queue $name" "$code" 200
    fi
}

ensure_user() { # NAME REALNAME
    local name=$1 real_name=$2 code body
    body="{\"Name\": \"$name\", \"RealName\": \"$real_name\", \"EmailAddress\": \"$name@example.test\", \"Privileged\": 1}"
    code=$(http_code GET "/user/$(urlencode "$name")")
    if [[ $code == 404 ]]; then
        code=$(http_code POST /user "$body")
        expect "creating user $name" "$code" 201
        log "created user $name"
    else
        expect "looking up user $name" "$code" 200
        code=$(http_code PUT "/user/$(urlencode "$name")" "$body")
        expect "updating user $name" "$code" 200
    fi
}

ensure_ticket_custom_field() { # NAME MAXVALUES DESCRIPTION
    local name=$1 max_values=$2 description=$3 query code
    query=$(urlencode "[{\"field\": \"Name\", \"value\": \"$name\"}, {\"field\": \"LookupType\", \"value\": \"RT::Queue-RT::Ticket\"}]")
    code=$(http_code GET "/customfields?query=${query}")
    expect "looking up custom field $name" "$code" 200
    if [[ $(json_field count) == 0 ]]; then
        code=$(http_code POST /customfield "{\"Name\": \"$name\", \"Type\": \"Freeform\", \"MaxValues\": $max_values, \"LookupType\": \"RT::Queue-RT::Ticket\", \"Description\": \"$description\"}")
        expect "creating custom field $name" "$code" 201
        log "created custom field $name"
    fi
}

set_queue_staff() { # QUEUE AGENTS...
    local queue=$1 members code
    shift
    members=$(printf '"%s",' "$@")
    code=$(http_code PUT "/queue/$(urlencode "$queue")" "{\"AdminCc\": [${members%,}]}")
    expect "setting the AdminCc of queue $queue" "$code" 200
}

seed() {
    local queue
    for queue in "${QUEUES[@]}"; do ensure_queue "$queue"; done
    ensure_ticket_custom_field "$MARKER_FIELD" 1 "helpdesk-triage marker: claim, result or failure"
    ensure_ticket_custom_field "$TAGS_FIELD" 0 "helpdesk-triage labels"
    ensure_user "$TRIAGE_USER" "helpdesk-triage"
    for agent in "${AGENTS[@]}"; do ensure_user "$agent" "Agent ${agent#agent-}"; done
    ensure_user "$READONLY_USER" "read-only observer"
    set_password "$READONLY_USER" "$READONLY_PASSWORD"
    # The adapter proposes owners among a queue's AdminCc watchers (see docs/rt.md).
    for queue in "${QUEUES[@]}"; do set_queue_staff "$queue" "${AGENTS[@]}"; done
}

current_token() {
    [[ -f $RT_ENV_FILE ]] || return 1
    sed -n "s/^TRIAGE_TEST_RT_TOKEN='\\{0,1\\}\\([^']*\\)'\\{0,1\\}\$/\\1/p" "$RT_ENV_FILE" | head -n 1
}

token_works() {
    local token=$1
    [[ -n $token ]] || return 1
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: token ${token}" "${API}/rt") == 200 ]]
}

provision() { # applies custom fields, grants rights, makes a token when needed
    local token token_file=''
    token=$(current_token || true)
    if ! token_works "$token"; then
        token_file="${WORK_DIR}/token"
    fi
    RT_CI_QUEUES=$(joined "${QUEUES[@]}") \
        RT_CI_CUSTOM_FIELDS="${MARKER_FIELD},${TAGS_FIELD}" \
        RT_CI_TRIAGE_USER="$TRIAGE_USER" \
        RT_CI_AGENTS=$(joined "${AGENTS[@]}") \
        RT_CI_READONLY_USER="$READONLY_USER" \
        RT_CI_TOKEN_FILE="$token_file" \
        rt-setup-database --action insert --datafile "${SCRIPT_DIR}/rt/provision.pl" \
        </dev/null >"${WORK_DIR}/provision.log" 2>&1 ||
        { cat "${WORK_DIR}/provision.log" >&2; fail "rt-setup-database could not provision"; }
    grep -E '^(granted|applied|created)' "${WORK_DIR}/provision.log" | sed 's/^/  /' || true
    if [[ -n $token_file ]]; then
        token=$(<"$token_file")
        token_works "$token" || fail "the new auth token for ${TRIAGE_USER} is refused"
    fi
    TOKEN=$token
}

write_env_file() {
    local tmp="${RT_ENV_FILE}.tmp"
    (
        umask 077
        cat >"$tmp" <<EOF
# A local Request Tracker for the live adapter tests (written by .ci/rt-setup.sh).
# Shell syntax: "set -a; . .ci/rt/rt.env; set +a" exports it.
TRIAGE_TEST_RT_URL='${RT_URL}'
TRIAGE_TEST_RT_TOKEN='${TOKEN}'
TRIAGE_TEST_RT_USER='${TRIAGE_USER}'
TRIAGE_TEST_RT_ADMIN_USER='root'
TRIAGE_TEST_RT_ADMIN_PASSWORD='${RT_ROOT_PASSWORD}'
TRIAGE_TEST_RT_READONLY_USER='${READONLY_USER}'
TRIAGE_TEST_RT_READONLY_PASSWORD='${READONLY_PASSWORD}'
TRIAGE_TEST_RT_QUEUES='$(joined "${QUEUES[@]}")'
TRIAGE_TEST_RT_AGENTS='$(joined "${AGENTS[@]}")'
TRIAGE_TEST_RT_MARKER_FIELD='${MARKER_FIELD}'
TRIAGE_TEST_RT_TAGS_FIELD='${TAGS_FIELD}'
EOF
    )
    mv "$tmp" "$RT_ENV_FILE"
}

verify_logins() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' -u "${READONLY_USER}:${READONLY_PASSWORD}" \
        "${API}/rt") == 200 ]] || fail "${READONLY_USER} cannot log in"
    local body
    body=$(curl -sS -H "Authorization: token ${TOKEN}" "${API}/queues/all?fields=Name&per_page=100") ||
        fail "the triage user cannot list queues"
    local queue
    for queue in "${QUEUES[@]}"; do
        grep -q "\"$queue\"" <<<"$body" || fail "the triage user cannot see queue $queue"
    done
}

main() {
    [[ ${1-} == stop ]] && { stop_server; exit 0; }
    [[ $EUID -eq 0 ]] || fail "run as root (it installs packages and writes /etc)"
    install_packages
    if write_site_config; then
        stop_server
    fi
    set_password root "$RT_ROOT_PASSWORD"
    start_server
    check_loopback_only
    seed
    provision
    verify_logins
    write_env_file
    log "ready: ${RT_URL} (REST2 at ${API}), triage user ${TRIAGE_USER}, env in ${RT_ENV_FILE}"
    log "done in $(($(date +%s) - STARTED_AT))s"
}

main "$@"
