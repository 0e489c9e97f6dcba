#!/bin/sh
# Install Python $1 (when the image lacks it) and make the virtual environment /opt/venv.
# Sources, in order: the image itself (python:X.Y images), the distribution's packages (Debian,
# Ubuntu), the deadsnakes PPA (other Pythons on Ubuntu).
set -eu
PY="$1"
if ! command -v "python$PY" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  if apt-cache show "python$PY-venv" >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends "python$PY" "python$PY-venv" ca-certificates
  elif grep -qi ubuntu /etc/os-release; then
    apt-get install -y --no-install-recommends software-properties-common gpg-agent
    add-apt-repository -y ppa:deadsnakes/ppa
    apt-get update
    apt-get install -y --no-install-recommends "python$PY" "python$PY-venv" ca-certificates
    apt-get purge -y --auto-remove software-properties-common gpg-agent
  else
    echo "mlctl: Python $PY is not available from this image's package sources" >&2
    exit 1
  fi
  rm -rf /var/lib/apt/lists/*
fi
"python$PY" -m venv /opt/venv
# setuptools comes with some venvs but belongs to no layer's requirements; a later layer that needs a
# newer one would otherwise have to upgrade a package of its parent, which mlctl forbids.
/opt/venv/bin/python -m pip uninstall -y -q setuptools 2>/dev/null || true
mkdir -p /etc/mlctl
/opt/venv/bin/python -m pip freeze > /etc/mlctl/freeze-python.txt
/opt/venv/bin/python -m pip check
/opt/venv/bin/python -c "import sys; assert sys.version.startswith('$PY'), sys.version"
