#!/usr/bin/env bash
# Starts the sessiongate demo farm on loopback (make demo):
#   3 memcached   127.0.0.1:11211-11213
#   3 php -S      127.0.0.1:8081-8083 (lamp01-03, deploy/demo/app, pecl memcache sessions)
#   sessiongate   127.0.0.1:8080, admin 127.0.0.1:9090 (deploy/demo/config.yaml), in the foreground
# Ctrl-C or SIGTERM stops everything it started.
#
# Environment:
#   SESSIONGATE       the binary (default: bin/sessiongate in the repository)
#   DEMO_READY_FILE   written once everything listens (key=value lines), removed on exit
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${SESSIONGATE:-$root/bin/sessiongate}
# These must match deploy/demo/config.yaml.
mc_ports=(11211 11212 11213)
php_ports=(8081 8082 8083)
listen_port=8080
admin_port=9090

if [[ ! -x $bin ]]; then
	echo "demo: $bin is missing: run 'make build' or set SESSIONGATE" >&2
	exit 1
fi

# Dependencies: Debian packages memcached, php-cli, php-memcache.
need=()
command -v memcached >/dev/null || need+=(memcached)
if ! command -v php >/dev/null; then
	need+=(php-cli php-memcache)
elif ! php -m | grep -x memcache >/dev/null; then  # not -q: an early exit would SIGPIPE php under pipefail
	need+=(php-memcache)
fi
if ((${#need[@]})); then
	sudo=()
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	echo "demo: installing ${need[*]}" >&2
	if ! { command -v apt-get >/dev/null && { ((${#sudo[@]} == 0)) || command -v sudo >/dev/null; } &&
		{ "${sudo[@]}" apt-get install -y "${need[@]}" ||
			{ "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y "${need[@]}"; }; }; }; then
		echo "demo: could not install them; install these Debian packages and rerun: ${need[*]}" >&2
		exit 1
	fi
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

busy=()
for p in "$listen_port" "${php_ports[@]}" "$admin_port" "${mc_ports[@]}"; do
	if listening "$p"; then busy+=("$p"); fi
done
if ((${#busy[@]})); then
	echo "demo: port(s) ${busy[*]} on 127.0.0.1 are busy; stop what listens there (ss -ltnp) and rerun" >&2
	exit 1
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/sessiongate-demo.XXXXXX")
pids=()

cleanup() {
	trap - EXIT INT TERM
	# Every process runs in its own process group (setsid): php -S with
	# workers does not pass SIGTERM on to them, so the whole group is signalled.
	local pid
	for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [[ -n ${DEMO_READY_FILE:-} ]]; then rm -f "$DEMO_READY_FILE"; fi
	echo "demo: stopped; logs are in $logs" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start LOG CMD...: runs CMD in the background in its own process group.
start() {
	local log=$1
	shift
	setsid "$@" >"$log" 2>&1 </dev/null &
	pids+=("$!")
}

# wait_port NAME PORT: waits up to 10 s for the last started process to listen.
wait_port() {
	local pid=${pids[-1]} i
	for ((i = 0; i < 100; i++)); do
		listening "$2" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: $1 exited early:" >&2
			tail -n 20 "$logs/$1.log" >&2 || true
			exit 1
		fi
		sleep 0.1
	done
	echo "demo: $1 is not listening on 127.0.0.1:$2 after 10 s; see $logs/$1.log" >&2
	exit 1
}

mc_user=()
[[ $(id -u) != 0 ]] || mc_user=(-u nobody) # memcached refuses to run as root
mc_pids=()
save_path=()
for p in "${mc_ports[@]}"; do
	start "$logs/memcached-$p.log" memcached "${mc_user[@]}" -l 127.0.0.1 -p "$p" -U 0 -m 64
	wait_port "memcached-$p" "$p"
	mc_pids+=("$p=${pids[-1]}")
	save_path+=("tcp://127.0.0.1:$p")
done

for i in "${!php_ports[@]}"; do
	name=lamp0$((i + 1))
	p=${php_ports[i]}
	start "$logs/$name.log" env PHP_CLI_SERVER_WORKERS=4 LAMP_NAME="$name" \
		php -c "$here/php-memcache.ini" -d "session.save_path=$(IFS=,; echo "${save_path[*]}")" \
		-S "127.0.0.1:$p" -t "$here/app"
	wait_port "$name" "$p"
done

# sessiongate logs to this terminal.
"$bin" check -config "$here/config.yaml" >/dev/null
setsid "$bin" run -config "$here/config.yaml" </dev/null &
pids+=("$!")
sg=$!
for p in "$listen_port" "$admin_port"; do
	for ((i = 0; i < 100; i++)); do
		listening "$p" && break
		kill -0 "$sg" 2>/dev/null || { echo "demo: sessiongate exited early" >&2; exit 1; }
		sleep 0.1
	done
	listening "$p" || { echo "demo: sessiongate is not listening on 127.0.0.1:$p after 10 s" >&2; exit 1; }
done

jar=$logs/cookies.txt
cat <<EOF

sessiongate demo is up.
  app        http://127.0.0.1:$listen_port/
  dashboard  http://127.0.0.1:$admin_port/
  logs       $logs
  memcached  pids by port: ${mc_pids[*]}

Try (in another terminal):
  # the counter keeps counting while round robin moves across lamp01-03
  for i in 1 2 3 4 5 6; do curl -s -b $jar -c $jar http://127.0.0.1:$listen_port/ | grep -oE 'id="(backend|visits)">[^<]*' | paste -sd' '; done
  # stop one memcached node, then run the loop again: the session survives
  kill ${mc_pids[0]#*=}
  # what sessiongate knows about this session
  curl -s -H 'Authorization: Bearer demo-token' http://127.0.0.1:$admin_port/api/sessions/\$(awk '\$6=="PHPSESSID"{print \$7}' $jar)

Ctrl-C stops everything.
EOF

if [[ -n ${DEMO_READY_FILE:-} ]]; then
	printf 'logs=%s\nmemcached=%s\n' "$logs" "${mc_pids[*]}" >"$DEMO_READY_FILE"
fi

status=0
wait "$sg" || status=$?
echo "demo: sessiongate exited with status $status" >&2
exit "$status"
