# Steps of the local image recipes (sourced by build-root.sh inside the chroot).
# Each mirrors what the matching Dockerfile does; foundry.dev.images lists
# which image runs which step. A change here changes every image's cache key.

# The host's apt tolerates its snapshot mirror's expired Release files; so must we.
apt_get() {
  apt-get -q -y -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false \
    -o APT::Install-Recommends=false -o APT::Install-Suggests=false "$@"
}

# Debian's mirrors only, no docs or man pages installed, no daemons started by postinst.
step_configure_apt() {
  rm -f /etc/apt/sources.list
  cp "$B/debian.sources" /etc/apt/sources.list.d/debian.sources
  cat > /etc/dpkg/dpkg.cfg.d/foundry-slim <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
CFG
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
}

# /opt/foundry: Foundry's dependencies in a venv, pip and setuptools removed (as
# operator/Dockerfile's build stage). The Foundry wheel itself is the image's top
# layer, added outside the chroot, so a code change rebuilds only that layer.
step_foundry_venv() {
  python3 -m venv /opt/foundry
  /opt/foundry/bin/pip install --quiet -r "$B/requirements.txt"
  /opt/foundry/bin/pip uninstall --quiet --yes pip setuptools
  /opt/foundry/bin/python -m compileall -q /opt/foundry/lib
}

# operator/Dockerfile: uid 10001, HOME /tmp (the only writable place).
step_foundry_user() {
  groupadd --system --gid 10001 foundry
  useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin foundry
}

# operator/Dockerfile.agent: the same uid 10001 (made by step_foundry_user in the base
# layer), HOME under the work emptyDir, and the contract's mount points.
step_agent_user() {
  usermod --home /foundry/work/home foundry
  mkdir -p /foundry/input /foundry/credentials /foundry/publish /foundry/work/home
  chown -R 10001:10001 /foundry/publish /foundry/work
}

# Aider in a venv of its own, with litellm's bundled price table beside it.
step_aider() {
  python3 -m venv /opt/aider
  /opt/aider/bin/pip install --quiet "aider-chat==$AIDER_VERSION"
  /opt/aider/bin/pip uninstall --quiet --yes pip
  prices=$(/opt/aider/bin/python -c 'import importlib.resources as r; print(r.files("litellm") / "model_prices_and_context_window_backup.json")')
  cp "$prices" /opt/aider/model_prices_and_context_window.json
}

# Claude Code and Codex were copied to /opt/agent-clis/{claude-code,codex} from the
# npm installs tools/agent-clis.sh made; link them (and Aider) onto PATH.
step_agent_links() {
  ln -s /opt/agent-clis/claude-code/node_modules/.bin/claude /usr/local/bin/claude
  ln -s /opt/agent-clis/codex/node_modules/.bin/codex /usr/local/bin/codex
  ln -s /opt/aider/bin/aider /usr/local/bin/aider
}

# The postgres user is uid/gid 999, as in the official image, and must exist before
# postgresql-common's postinst would create one; no cluster is made at install time.
step_postgres_user() {
  groupadd --system --gid 999 postgres
  useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --no-create-home --shell /bin/bash postgres
  mkdir -p /etc/postgresql-common
  echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
}

step_postgres_files() {
  install -m 0755 "$B/files/postgres-entrypoint.sh" /usr/local/bin/docker-entrypoint.sh
  mkdir -p /var/run/postgresql /var/lib/postgresql/data
  chown 999:999 /var/run/postgresql /var/lib/postgresql /var/lib/postgresql/data
  chmod 3777 /var/run/postgresql
  # PGDATA's parent volume: any uid may create the data directory in it.
  chmod 1777 /var/lib/postgresql/data
}

# What an image does not need at run time.
step_slim() {
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
  find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
  find /usr/share/doc -mindepth 1 -type d -empty -delete
  rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/lintian
  find /var/log -type f -delete
  rm -f /usr/sbin/policy-rc.d
  rm -rf /root/.cache /tmp/* /var/tmp/*
}
