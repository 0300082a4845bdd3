#!/bin/sh
# Runs as root inside the chroot of an image's root filesystem (foundry.dev.images
# starts it): make apt lean, run the recipe's steps around one package install, and
# drop what only the build needed. Inputs arrive in /run/foundry-build (removed by the
# caller afterwards): steps.sh, debian.sources, requirements.txt, files/, the pip
# cache and the host's CA bundle (for pip through this machine's proxy).
#
#   PACKAGES        Debian packages the image keeps
#   BUILD_PACKAGES  Debian packages purged again at the end (python3-venv)
#   PRE_STEPS       functions from steps.sh run before the packages are installed
#   STEPS           functions from steps.sh run after
set -eu
B=/run/foundry-build
. "$B/steps.sh"

step_configure_apt
for step in $PRE_STEPS; do echo "--- $step"; "$step"; done
apt_get update
# shellcheck disable=SC2086  # word splitting is the point: lists of names
apt_get install $PACKAGES $BUILD_PACKAGES
for step in $STEPS; do echo "--- $step"; "$step"; done
if [ -n "$BUILD_PACKAGES" ]; then
  # shellcheck disable=SC2086
  apt_get purge --auto-remove $BUILD_PACKAGES
fi
step_slim
