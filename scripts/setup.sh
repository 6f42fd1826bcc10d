# Sourced by the other scripts: installs what a fresh machine lacks (as root, with apt-get).
# cmake builds Pingora's C dependencies; hey and wrk are the load tools the demo prints.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v curl >/dev/null || missing+=(curl)
command -v hey >/dev/null || missing+=(hey)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})" >&2
  fi
fi
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
