#!/usr/bin/env bash
# Builds the native addon with plain cargo (no napi CLI needed) and puts it where
# index.js loads it: bindings/node/ktconnect.node. Also regenerates index.d.ts from
# the #[napi] items (commit it when it changes; the tests fail on drift).
#
#   bindings/node/build.sh            cargo profile `ci` (what the tests use)
#   PROFILE=release bindings/node/build.sh
#   bindings/node/build.sh --keep-typedefs FILE
#       leaves index.d.ts alone and saves napi-derive's type definitions in FILE
#       instead (./run-tests: test/typedefs.test.mjs compares them with index.d.ts)
#
# Uses CARGO_TARGET_DIR if set, else the shared cache kt's scripts use.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROFILE=${PROFILE:-ci}
KEEP=
if [ "${1:-}" = --keep-typedefs ]; then
	KEEP=${2:?build.sh: --keep-typedefs needs a file}
elif [ $# -gt 0 ]; then
	echo "usage: build.sh [--keep-typedefs FILE]" >&2
	exit 2
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kt/target/$(rustc --version | tr ' ()' '___')}
# napi-derive writes the type definitions while it expands the macros, i.e. only when
# the crate is compiled: a fresh folder each time changes NAPI_TYPE_DEF_TMP_FOLDER, which
# napi-build watches, so this crate (only) is recompiled and the file is current.
TYPEDEFS=$(mktemp -d)
trap 'rm -rf "$TYPEDEFS"' EXIT
(cd "$HERE" && NAPI_TYPE_DEF_TMP_FOLDER=$TYPEDEFS cargo build -p ktconnect-node --profile "$PROFILE")
[ -s "$TYPEDEFS/ktconnect-node" ] || { echo "build.sh: napi-derive wrote no type definitions to $TYPEDEFS" >&2; exit 1; }

dir=$PROFILE
[ "$PROFILE" = dev ] && dir=debug
case "$(uname -s)" in
Darwin) lib=libktconnect_node.dylib ;;
*) lib=libktconnect_node.so ;;
esac
cp "$CARGO_TARGET_DIR/$dir/$lib" "$HERE/ktconnect.node.tmp"
mv "$HERE/ktconnect.node.tmp" "$HERE/ktconnect.node"
if [ -n "$KEEP" ]; then
	cp "$TYPEDEFS/ktconnect-node" "$KEEP"
	echo "built $HERE/ktconnect.node (profile $PROFILE); type definitions in $KEEP"
else
	node "$HERE/scripts/gen-dts.mjs" "$TYPEDEFS/ktconnect-node" --write
	echo "built $HERE/ktconnect.node (profile $PROFILE); index.d.ts regenerated"
fi
