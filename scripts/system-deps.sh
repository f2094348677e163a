#!/usr/bin/env bash
# Debian packages the platform and its tests need beyond Python wheels, installed only when
# missing (a fresh machine has none of them; apt-get update runs once, only if needed):
#   libudunits2-0  UDUNITS-2 for the CF checker the NetCDF tests run (cf-units bundles its own)
#   libexpat1      loaded by cf-units' bundled UDUNITS-2 (slim images lack it)
#   chromium       headless browser for the OGC API page test
#   mosquitto      MQTT broker the Netatmo tests start their own instances of
set -euo pipefail
wanted=(libudunits2-0 libexpat1 chromium mosquitto)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "system-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
