#!/usr/bin/env node
// Takes over a workload's traffic: pods calling the target's Service reach a small HTTP
// server in this process until Ctrl-C (or SIGTERM); then the cluster is put back
// exactly as it was.
//
//   bindings/node/build.sh                        # once: builds the addon
//   node examples/node/swap.mjs [--kubeconfig FILE] [--namespace NS] \
//       [--target deploy/echo] [--remote 80] [--mode selector|scale]
//
// The namespace needs the target (the lab's echo app) and kt's Roles kt-vpn and
// kt-inbound; in the lab, `testbed/test-namespace create demo --role inbound` makes one.
import http from 'node:http'
import { parseArgs } from 'node:util'

import { Session } from '../../bindings/node/index.js'

const { values: args } = parseArgs({
  options: {
    kubeconfig: { type: 'string' },
    namespace: { type: 'string' },
    target: { type: 'string', default: 'deploy/echo' },
    remote: { type: 'string', default: '80' },
    mode: { type: 'string', default: 'selector' },
    message: { type: 'string', default: 'hello from this laptop\n' },
  },
})

const server = http.createServer((req, res) => {
  console.error(`local: ${req.socket.remoteAddress} ${req.method} ${req.url}`)
  res.end(args.message)
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const { port } = server.address()
const stopped = new Promise((resolve) => {
  process.once('SIGINT', resolve)
  process.once('SIGTERM', resolve)
})

let session
try {
  session = await Session.connect({ kubeconfig: args.kubeconfig, namespace: args.namespace })
  const swap = await session.swap(args.target, { expose: `${port}:${args.remote}`, mode: args.mode })
  try {
    console.log(
      `swapped ${swap.target} (${swap.mode} mode, Services ${swap.services.join(', ') || '-'}): ` +
        `port ${swap.ports[0].remote} now reaches 127.0.0.1:${port}; Ctrl-C to restore`,
    )
    await stopped
    console.log(`restoring after ${swap.connections} connection(s)`)
  } finally {
    await swap.close() // or: await using swap = ... (Node 24+)
  }
  console.log('restored')
} catch (e) {
  console.error(`error (${e.code}): ${e.message}`)
  process.exitCode = 1
} finally {
  await session?.close()
  server.close()
}
