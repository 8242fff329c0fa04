#!/usr/bin/env node
// The Node side of the bindings benchmark: for each run, Session.connect, one
// resolve('echo'), close. Prints one line per measurement on stdout, nothing else:
//   connect <seconds>
//   resolve <seconds>
// (seconds as a float, from performance.now() around the ktconnect call alone; close
// is not measured). Diagnostics go to stderr; any failure exits 1.
//
//   node benches/bindings/bench.mjs --kubeconfig K --namespace NS --runs N
//
// The addon is bindings/node/ktconnect.node (bindings/node/build.sh), or the file
// named by KTCONNECT_NATIVE (e.g. $CARGO_TARGET_DIR/ci/libktconnect_node.so).
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'

import { Session } from '../../bindings/node/index.js'

function usage(message) {
  console.error(`bench.mjs: ${message}\nusage: node bench.mjs --kubeconfig K --namespace NS --runs N`)
  process.exit(2)
}

let args
try {
  args = parseArgs({
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      runs: { type: 'string' },
    },
  }).values
} catch (e) {
  usage(e.message)
}
if (!args.kubeconfig || !args.namespace || !args.runs) usage('--kubeconfig, --namespace and --runs are required')
const runs = Number(args.runs)
if (!Number.isInteger(runs) || runs < 1) usage(`--runs must be a positive integer, got ${args.runs}`)

try {
  for (let i = 0; i < runs; i++) {
    let t = performance.now()
    const session = await Session.connect({ kubeconfig: args.kubeconfig, namespace: args.namespace })
    const connect = (performance.now() - t) / 1000
    try {
      t = performance.now()
      await session.resolve('echo')
      const resolve = (performance.now() - t) / 1000
      console.log(`connect ${connect}`)
      console.log(`resolve ${resolve}`)
    } finally {
      await session.close()
    }
  }
} catch (e) {
  console.error(`bench.mjs: ${e.code ?? 'error'}: ${e.message}`)
  process.exit(1)
}
