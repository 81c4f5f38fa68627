#!/usr/bin/env bash
# Re-vendors the pinned HPKE library from the npm registry: checks each tarball's registry integrity,
# keeps only the ES modules and the licence, and rewrites the one bare import so browsers need no import map.
set -euo pipefail
cd "$(dirname "$0")"
declare -A PINS=(
  ["@hpke/core@1.9.0"]="sha512-pFxWl1nNJeQCSUFs7+GAblHvXBCjn9EPN65vdKlYQil2aURaRxfGMO6vBKGqm1YHTKwiAxJQNEI70PbSowMP9Q=="
  ["@hpke/common@1.10.1"]="sha512-moJwhmtLtuxiUzzNp1jpfBfx8yefKoO9D/RCR9dmwrnc7qjJqId1rEtQz+lSlU5cabX8daToMSx/7HayXOiaFw=="
)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for spec in "${!PINS[@]}"; do
  name=${spec%@*}; dir=${name#@hpke/}; dir="hpke-$dir"
  tgz=$(cd "$tmp" && npm pack --silent "$spec")
  got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tgz" | base64 -w0)"
  [ "$got" = "${PINS[$spec]}" ] || { echo "integrity mismatch for $spec" >&2; exit 1; }
  rm -rf "$dir"
  tar xzf "$tmp/$tgz" -C "$tmp" && mkdir -p "$dir"
  (cd "$tmp/package" && find esm -name '*.js' -print0 | xargs -0 -I{} install -D -m 0644 {} "$OLDPWD/$dir/{}" && cp LICENSE "$OLDPWD/$dir/")
  rm -rf "$tmp/package"
done
# "@hpke/common" -> a relative path from each file to hpke-common/esm/mod.js.
find hpke-core -name '*.js' | while read -r f; do
  rel=$(realpath --relative-to="$(dirname "$f")" hpke-common/esm/mod.js)
  sed -i "s#from \"@hpke/common\"#from \"$rel\"#g" "$f"
done
# Only doc comments (lines starting with " *") may still name a package.
! grep -rn 'from "@' hpke-core hpke-common | grep -v ':[0-9]*: \*'
