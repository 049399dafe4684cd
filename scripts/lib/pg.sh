# shellcheck shell=bash
# Script-managed PostgreSQL clusters from Debian's packages (no Docker, no system service).
# Sourced by dev.sh, test.sh and bench.sh. initdb refuses to run as root, so when we are root
# the cluster runs as the `postgres` user, with its data in a directory that user owns.

PG_MAJOR="${PG_MAJOR:-15}"

pg_bindir() {
  local dir="/usr/lib/postgresql/${PG_MAJOR}/bin"
  if [[ -x "$dir/initdb" ]]; then echo "$dir"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir; return
  fi
  echo "$dir"
}

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: $* (run as root, or install them with apt-get)" >&2
    return 1
  fi
  if [[ -z "${_PG_APT_UPDATED:-}" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _PG_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs the PostgreSQL server binaries when they are missing. Debian's package may create and
# start its own "main" cluster on 5432; we never use it and stop it so that nothing stays running.
ensure_postgres() {
  if [[ ! -x "$(pg_bindir)/initdb" ]]; then
    echo "installing postgresql-${PG_MAJOR} ..." >&2
    apt_install "postgresql-${PG_MAJOR}" "postgresql-contrib-${PG_MAJOR}" postgresql-client-${PG_MAJOR} || return 1
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      pg_ctlcluster "${PG_MAJOR}" main stop >/dev/null 2>&1 || true
    fi
  fi
}

# pgTAP extension and pg_prove.
ensure_pgtap() {
  local share
  share="$(dirname "$(pg_bindir)")/../../../share/postgresql/${PG_MAJOR}/extension"
  if [[ ! -f "/usr/share/postgresql/${PG_MAJOR}/extension/pgtap.control" ]] || ! command -v pg_prove >/dev/null 2>&1; then
    echo "installing pgtap ..." >&2
    apt_install "postgresql-${PG_MAJOR}-pgtap" pgtap || return 1
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

_as_pg_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start DATADIR PORT [extra postgres -c options...]
# Initialises DATADIR when empty and starts the server on 127.0.0.1:PORT (socket in DATADIR).
pg_start() {
  local data="$1" port="$2"; shift 2
  local bin; bin="$(pg_bindir)"
  mkdir -p "$data"
  if [[ $(id -u) -eq 0 ]]; then
    # the postgres user must reach the data directory (mktemp -d makes its parent 0700)
    chmod o+x "$(dirname "$data")"
    chown postgres: "$data"; chmod 700 "$data"
  fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    _as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null || return 1
  fi
  local opts="-p $port -k $data -c listen_addresses=127.0.0.1"
  local o; for o in "$@"; do opts+=" -c $o"; done
  _as_pg_owner "$bin/pg_ctl" -D "$data" -o "$opts" -l "$data/server.log" -w -t 60 start >/dev/null || {
    echo "PostgreSQL did not start; its log:" >&2; tail -n 30 "$data/server.log" >&2; return 1; }
}

# pg_stop DATADIR [mode]: fast by default.
pg_stop() {
  local data="$1" mode="${2:-fast}"
  [[ -f "$data/postmaster.pid" ]] || return 0
  _as_pg_owner "$(pg_bindir)/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
}
