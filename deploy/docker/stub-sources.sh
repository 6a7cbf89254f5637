#!/bin/sh
# Stub sources for the Dockerfile's dependency layer: for every member manifest present
# (any `Cargo.toml` below the root), an empty src/lib.rs, a src/main.rs, and a file at the path of each
# [lib], [[bin]], [[bench]], [[test]] and [[example]] target, so cargo can load the
# workspace, fetch and compile every dependency before the real code is copied in.
# Existing files are left alone.
set -eu
stub() {
  [ -e "$1" ] && return 0
  mkdir -p "$(dirname "$1")"
  echo 'fn main() {}' >"$1"
}
find . -mindepth 2 -name Cargo.toml -not -path "./target/*" | while read -r manifest; do
  dir=${manifest%/Cargo.toml}
  [ -e "$dir/src/lib.rs" ] || { mkdir -p "$dir/src"; : >"$dir/src/lib.rs"; }
  stub "$dir/src/main.rs"
  # each target's path: given, or cargo's default for its kind and name
  awk '
    function emit() {
      if (kind == "") return
      if (path != "") print path
      else if (kind == "lib") print "src/lib.rs"
      else if (name != "") print dirs[kind] "/" name ".rs"
    }
    BEGIN { dirs["bin"] = "src/bin"; dirs["bench"] = "benches"; dirs["test"] = "tests"; dirs["example"] = "examples" }
    /^[[:space:]]*\[/ {
      emit(); kind = ""; name = ""; path = ""
      if ($0 ~ /^[[:space:]]*\[lib\]/) kind = "lib"
      else if (match($0, /^[[:space:]]*\[\[(bin|bench|test|example)\]\]/)) {
        kind = $0; sub(/^[[:space:]]*\[\[/, "", kind); sub(/\]\].*/, "", kind)
      }
      next
    }
    kind != "" && /^[[:space:]]*name[[:space:]]*=/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); name = v }
    kind != "" && /^[[:space:]]*path[[:space:]]*=/ { v = $0; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); path = v }
    END { emit() }
  ' "$manifest" | while read -r target; do stub "$dir/$target"; done
done
