#!/usr/bin/env bash
# Install the still photographs used as extra training data (Debian packages; nothing is fetched
# at training time) and list them for `preedit train --source`.
#
#   scripts/data_photos.sh            # apt-get update + install, then print the folders
#   scripts/data_photos.sh --list     # only print the folders (no install)
#
# Packages: plasma-workspace-wallpapers, mate-backgrounds, gnome-backgrounds. Their images land
# under /usr/share/wallpapers, /usr/share/backgrounds (and /usr/share/backgrounds/mate). The
# trainer reads .jpg/.png/.webp from the folders given in `photo_sources` (training/configs).
# Exit codes: 0 ok, 2 usage, 3 apt-get failed.
set -euo pipefail
PKGS=(plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds)
case "${1:-}" in
  "") ;;
  --list) ;;
  *) echo "usage: $0 [--list]" >&2; exit 2 ;;
esac
if [[ "${1:-}" != "--list" ]]; then
  SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
  if ! $SUDO apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; then
    echo "data_photos.sh: apt-get could not install ${PKGS[*]}" >&2; exit 3
  fi
fi
for d in /usr/share/wallpapers /usr/share/backgrounds; do
  [[ -d "$d" ]] && echo "$d: $(find "$d" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) | wc -l) images"
done
exit 0
