#!/bin/sh
# Start Kamailio in the foreground in front of N triage SIP bridges, with everything it writes
# (dispatcher list, pid file, control socket) in a directory of its own: never /etc/kamailio,
# /run/kamailio or the system service. Logs go to stderr. Stop it with SIGTERM (or Ctrl-C).
#
#   deploy/kamailio/run.sh [options] RUN_DIR LISTEN BRIDGE[,BRIDGE...] [BRIDGE...]
#
#   LISTEN        IP:PORT where Kamailio takes calls (UDP), e.g. 127.0.0.1:5060
#   BRIDGE        IP:PORT of a bridge's SIP socket (a node's TRIAGE_SIP_HOST:TRIAGE_SIP_PORT)
#   -i SECONDS    seconds between OPTIONS probes of each bridge (default 3)
#   -t COUNT      failed probes in a row before a bridge is taken out (default 2)
#   -n COUNT      SIP worker processes (default 4)
#   -d LEVEL      log level: 0 warnings, 1 also each dispatch decision (default), 3 debug
#
# Then: kamcmd -s unix:RUN_DIR/kamailio_ctl dispatcher.list
# Environment: KAMAILIO (default /usr/sbin/kamailio), KAMAILIO_MODULES (default: the directory
# of Debian's dispatcher.so, from `dpkg -L kamailio`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
interval=3
threshold=2
children=4
level=1
while getopts i:t:n:d: option; do
    case $option in
        i) interval=$OPTARG ;;
        t) threshold=$OPTARG ;;
        n) children=$OPTARG ;;
        d) level=$OPTARG ;;
        *) sed -n '6,13p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -lt 3 ]; then
    sed -n '6,13p' "$0" >&2
    exit 2
fi
run_dir=$1
listen=$2
shift 2

kamailio=${KAMAILIO:-/usr/sbin/kamailio}
modules=${KAMAILIO_MODULES:-$(dirname "$(dpkg -L kamailio 2>/dev/null | grep '/dispatcher\.so$' | head -n 1)")}
if [ ! -x "$kamailio" ] || [ ! -f "$modules/dispatcher.so" ]; then
    echo "run.sh: Kamailio or its dispatcher module not found (apt-get install kamailio)" >&2
    exit 1
fi

mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
list="$run_dir/dispatcher.list"
# set 1, one line per bridge: flags 8 (probed; active until probes fail), priority 0, and the
# unique id that call-load dispatching (algorithm 10) counts calls by
: > "$list.tmp"
number=0
for bridge in $(echo "$@" | tr ',' ' '); do
    number=$((number + 1))
    echo "1 sip:$bridge 8 0 duid=bridge$number" >> "$list.tmp"
done
mv "$list.tmp" "$list"

exec "$kamailio" -DD -E \
    -f "$here/kamailio.cfg" -L "$modules" -Y "$run_dir" -w "$run_dir" \
    -P "$run_dir/kamailio.pid" -m 64 -M 8 \
    -A "LISTEN=udp:$listen" \
    -A "DISPATCHER_LIST=\"$list\"" \
    -A "CTL_SOCKET=\"unix:$run_dir/kamailio_ctl\"" \
    -A "CHILDREN=$children" \
    -A "DS_PING_INTERVAL=$interval" \
    -A "DS_PROBING_THRESHOLD=$threshold" \
    -A "LOG_LEVEL=$level"
