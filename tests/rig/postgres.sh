#!/usr/bin/env bash
# postgres.sh: a throw-away PostgreSQL for tests and benchmarks (notes/postgres.md). One instance per DIR: initdb
# in DIR/data as the `postgres` user, listening only on a unix socket in DIR (no TCP port, so parallel instances
# never clash), trust authentication, database "strongroom".
#
# DIR files (written by this script): owner_pid, owner_start (the owner process; `sweep` removes instances whose
# owner died), conninfo, log, data/ (the cluster), and the socket .s.PGSQL.5432.
# Nothing is left behind by `down`: the server is stopped (fast, then immediate, then SIGKILL of the postmaster
# and its children), its System V shared memory segment removed, DIR deleted.
set -euo pipefail

readonly PROG=postgres.sh
readonly PORT=5432
readonly STOP_TIMEOUT=20

usage() {
  cat <<'EOF'
Usage:
  postgres.sh up DIR [--owner PID]   create DIR (must not exist), initdb, start; prints the conninfo
  postgres.sh stop DIR               stop the server (fast shutdown), keep the data
  postgres.sh start DIR              start a stopped server again
  postgres.sh down DIR               stop the server and delete DIR (idempotent)
  postgres.sh sweep ROOT             `down` every ROOT/*/ whose owner process is gone
  postgres.sh psql DIR SQL           run SQL as superuser in database strongroom; unaligned, tuples only
  postgres.sh dump DIR               pg_dump of database strongroom (plain SQL, with data) on stdout
Errors: "postgres.sh: <what>: <why>" on stderr, exit 1 (2 for usage).
EOF
}

die() {
  printf '%s: %s: %s\n' "$PROG" "$1" "$2" >&2
  exit 1
}

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x $d/pg_ctl ]]; then
      printf '%s\n' "$d"
      return
    fi
  done
  die "postgres" "no /usr/lib/postgresql/*/bin/pg_ctl (install the postgresql package)"
}

as_postgres() { runuser -u postgres -- "$@"; }

proc_start() { # proc_start PID: field 22 of /proc/PID/stat
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  local -a f
  read -r -a f <<<"${stat##*) }"
  printf '%s\n' "${f[19]}"
}

postmaster_pid() { # the PID in DIR/data/postmaster.pid, if that process is a postgres of DIR
  local dir=$1 pid
  [[ -f $dir/data/postmaster.pid ]] || return 1
  read -r pid <"$dir/data/postmaster.pid" || return 1
  [[ $pid =~ ^[1-9][0-9]*$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/data" || return 1
  printf '%s\n' "$pid"
}

cmd_up() {
  local dir="" owner=$PPID
  while (($#)); do
    case $1 in
      --owner) owner=$2; shift 2 ;;
      *) [[ -z $dir ]] || die "$1" "unexpected argument"; dir=$1; shift ;;
    esac
  done
  [[ -n $dir ]] || { usage >&2; exit 2; }
  [[ ! -e $dir ]] || die "$dir" "already exists"
  local bin start
  bin=$(bindir)
  start=$(proc_start "$owner") || die "--owner" "process $owner does not exist"
  mkdir -p -- "$(dirname -- "$dir")"
  mkdir -m 0700 -- "$dir"
  dir=$(cd -- "$dir" && pwd -P)
  printf '%s\n' "$owner" >"$dir/owner_pid"
  printf '%s\n' "$start" >"$dir/owner_start"
  chown postgres:postgres "$dir"
  trap 'cmd_down "$dir" >/dev/null 2>&1 || true' EXIT
  as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
    die "initdb" "$(tail -5 "$dir/initdb.log")"
  # mmap dynamic shared memory lives in the data directory, so nothing lands in /dev/shm.
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-k $dir -p $PORT -c listen_addresses='' -c dynamic_shared_memory_type=mmap -c max_connections=200" \
    start >/dev/null || die "pg_ctl start" "$(tail -5 "$dir/log")"
  as_postgres "$bin/psql" -h "$dir" -p "$PORT" -U postgres -d postgres -qAt -c "CREATE DATABASE strongroom" >/dev/null ||
    die "createdb" "cannot create database strongroom"
  printf 'host=%s port=%s dbname=strongroom user=postgres\n' "$dir" "$PORT" >"$dir/conninfo"
  trap - EXIT
  cat "$dir/conninfo"
}

cmd_stop() {
  local dir=$1 bin
  bin=$(bindir)
  [[ -d $dir/data ]] || die "$dir" "no data directory"
  postmaster_pid "$dir" >/dev/null || return 0
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 ||
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 || true
}

cmd_start() {
  local dir=$1 bin
  bin=$(bindir)
  [[ -d $dir/data ]] || die "$dir" "no data directory"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-k $dir -p $PORT -c listen_addresses='' -c dynamic_shared_memory_type=mmap -c max_connections=200" \
    start >/dev/null || die "pg_ctl start" "$(tail -5 "$dir/log")"
}

cmd_down() {
  local dir=$1
  [[ -e $dir ]] || return 0
  dir=$(cd -- "$dir" && pwd -P)
  [[ -f $dir/owner_pid ]] || die "$dir" "not made by postgres.sh up; refusing to delete it"
  local pid shmid=""
  if [[ -f $dir/data/postmaster.pid ]]; then
    # Line 7: "<shm key> <shm id>" of the server's System V segment.
    shmid=$(sed -n '7p' "$dir/data/postmaster.pid" 2>/dev/null | awk '{print $2}')
  fi
  if pid=$(postmaster_pid "$dir"); then
    cmd_stop "$dir"
    if kill -0 "$pid" 2>/dev/null; then
      # Still there: kill the postmaster's children, then the postmaster (only processes of this instance).
      local children
      children=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
      kill -KILL "$pid" $children 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    fi
  fi
  if [[ $shmid =~ ^[0-9]+$ ]] && ipcs -m -i "$shmid" >/dev/null 2>&1; then ipcrm -m "$shmid" 2>/dev/null || true; fi
  rm -rf -- "$dir"
}

cmd_sweep() {
  local root=$1 dir owner start
  [[ -d $root ]] || return 0
  for dir in "$root"/*/; do
    [[ -f $dir/owner_pid ]] || continue
    owner=$(<"$dir/owner_pid")
    start=$(<"$dir/owner_start")
    if [[ $(proc_start "$owner" 2>/dev/null) == "$start" ]]; then continue; fi
    printf '%s: sweep: owner %s of %s is gone; removing it\n' "$PROG" "$owner" "${dir%/}" >&2
    cmd_down "${dir%/}"
  done
}

cmd_psql() {
  local dir=$1 sql=$2 bin
  bin=$(bindir)
  as_postgres "$bin/psql" -h "$dir" -p "$PORT" -U postgres -d strongroom -qAt -v ON_ERROR_STOP=1 -c "$sql"
}

cmd_dump() {
  local dir=$1 bin
  bin=$(bindir)
  as_postgres "$bin/pg_dump" -h "$dir" -p "$PORT" -U postgres -d strongroom
}

main() {
  (($# >= 1)) || { usage >&2; exit 2; }
  [[ $EUID == 0 || $1 == help ]] || die "$1" "must run as root (runs the server as the postgres user)"
  local cmd=$1
  shift
  case $cmd in
    up) cmd_up "$@" ;;
    stop) (($# == 1)) || { usage >&2; exit 2; }; cmd_stop "$1" ;;
    start) (($# == 1)) || { usage >&2; exit 2; }; cmd_start "$1" ;;
    down) (($# == 1)) || { usage >&2; exit 2; }; cmd_down "$1" ;;
    sweep) (($# == 1)) || { usage >&2; exit 2; }; cmd_sweep "$1" ;;
    psql) (($# == 2)) || { usage >&2; exit 2; }; cmd_psql "$1" "$2" ;;
    dump) (($# == 1)) || { usage >&2; exit 2; }; cmd_dump "$1" ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
