// The programs shipped beside the binding run against the lab: the example
// (examples/node/connect.mjs) and the benchmark driver (benches/bindings/bench.mjs),
// whose output format another program parses.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'

import { echoPods, labNamespace, objectsLabelled, REPO } from './lab.mjs'

const LIMIT = { timeout: 180_000 }
let ns

before(() => {
  ns = labNamespace('kt-node-prog')
}, LIMIT)

after(() => ns?.delete())

function run(script, args) {
  return promisify(execFile)(process.execPath, [join(REPO, script), ...args], { cwd: REPO })
}

test('examples/node/connect.mjs fetches echo through the proxy, prints it and closes', LIMIT, async () => {
  const { stdout } = await run('examples/node/connect.mjs', ['--kubeconfig', ns.kubeconfig, '--namespace', ns.namespace])
  assert.match(stdout, new RegExp(`GET http://echo\\.${ns.namespace}/hello -> 200`))
  const json = stdout.split('\n').find((l) => l.startsWith('{'))
  const reply = JSON.parse(json)
  assert.ok(echoPods(ns.namespace).includes(reply.pod), `${reply.pod} is an echo pod`)
  assert.match(stdout, /closed/)
  assert.deepEqual(objectsLabelled(ns.namespace, 'app.kubernetes.io/managed-by=kt'), [])
})

test('benches/bindings/bench.mjs prints exactly one connect and one resolve line per run', LIMIT, async () => {
  const { stdout } = await run('benches/bindings/bench.mjs', [
    '--kubeconfig', ns.kubeconfig, '--namespace', ns.namespace, '--runs', '2',
  ])
  const lines = stdout.trimEnd().split('\n')
  assert.equal(lines.length, 4, stdout)
  lines.forEach((line, i) => {
    const [name, seconds, ...rest] = line.split(' ')
    assert.equal(name, i % 2 === 0 ? 'connect' : 'resolve', line)
    assert.deepEqual(rest, [], line)
    assert.ok(Number.isFinite(Number(seconds)) && Number(seconds) > 0, line)
  })
  assert.deepEqual(objectsLabelled(ns.namespace, 'app.kubernetes.io/managed-by=kt'), [])
})

test('benches/bindings/bench.mjs exits non-zero with the error code when connect fails', LIMIT, async () => {
  await assert.rejects(
    run('benches/bindings/bench.mjs', ['--kubeconfig', '/nonexistent/kubeconfig', '--namespace', ns.namespace, '--runs', '1']),
    (e) => {
      assert.equal(e.code, 1)
      assert.equal(e.stdout, '')
      assert.match(e.stderr, /KT_KUBECONFIG/)
      return true
    },
  )
})
