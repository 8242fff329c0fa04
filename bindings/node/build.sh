#!/usr/bin/env bash
# Builds the native addon with plain cargo (no napi CLI needed) and puts it where
# index.js loads it: bindings/node/ktconnect.node. Also regenerates index.d.ts from
# the #[napi] items (commit it when it changes; the tests fail on drift).
#
#   bindings/node/build.sh            cargo profile `ci` (what the tests use)
#   PROFILE=release bindings/node/build.sh
#
# Uses CARGO_TARGET_DIR if set, else the shared cache kt's scripts use.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROFILE=${PROFILE:-ci}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kt/target/$(rustc --version | tr ' ()' '___')}
TYPEDEFS=$CARGO_TARGET_DIR/napi-type-defs
mkdir -p "$TYPEDEFS"

# napi-derive writes the type definitions while it expands the macros, i.e. only when
# the crate is compiled; NAPI_FORCE_BUILD_* (read by napi-build) forces that when the
# file is missing, e.g. after a build without NAPI_TYPE_DEF_TMP_FOLDER.
build() {
	(cd "$HERE" && NAPI_TYPE_DEF_TMP_FOLDER=$TYPEDEFS "$@" cargo build -p ktconnect-node --profile "$PROFILE")
}
build env
if [ ! -s "$TYPEDEFS/ktconnect-node" ]; then
	build env NAPI_FORCE_BUILD_KTCONNECT_NODE="$(date +%s%N)"
fi

dir=$PROFILE
[ "$PROFILE" = dev ] && dir=debug
case "$(uname -s)" in
Darwin) lib=libktconnect_node.dylib ;;
*) lib=libktconnect_node.so ;;
esac
cp "$CARGO_TARGET_DIR/$dir/$lib" "$HERE/ktconnect.node.tmp"
mv "$HERE/ktconnect.node.tmp" "$HERE/ktconnect.node"
node "$HERE/scripts/gen-dts.mjs" "$TYPEDEFS/ktconnect-node" --write
echo "built $HERE/ktconnect.node (profile $PROFILE); index.d.ts regenerated"
