// The imageless shadow from Node: with no shadow image, kt ships its agent into the
// namespace (ConfigMaps, uploaded once) and runs it on an image the node already has.
// One fresh namespace (testbed/test-namespace: restricted Pod Security, kt's Role
// only) with nothing of kt's in it; the tests run in order.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { Session } from '../index.js'
import { kubectl, labNamespace } from './lab.mjs'

const LIMIT = { timeout: 300_000 }
let ns

before(() => {
  ns = labNamespace('kt-node-imageless')
}, LIMIT)

after(() => ns?.delete())

/** Everything of kt's in the namespace (kt labels every object it makes). */
function ktObjects() {
  return kubectl(
    'get', 'pods,secrets,configmaps,services,leases', '-n', ns.namespace,
    '-l', 'app.kubernetes.io/managed-by=kt', '-o', 'name',
  )
    .split('\n')
    .filter((l) => l.trim() !== '')
}

test('an agentDir without the agent rejects with KT_INVALID_ARGUMENT naming the missing file and makes nothing', LIMIT, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kt-node-no-agent-'))
  try {
    await assert.rejects(
      Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace, agentDir: dir }),
      (e) => {
        assert.ok(e instanceof Error, `an Error, got ${e}`)
        assert.equal(e.code, 'KT_INVALID_ARGUMENT', e.message)
        assert.equal(e.kind, 'AgentInvalid', e.message)
        assert.ok(e.message.includes(`${dir}/kt-shadow`), e.message)
        assert.match(e.message, /build-static/)
        return true
      },
    )
    assert.deepEqual(ktObjects(), [])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a default connect uploads the agent once (an Uploading event) and works; the next one reuses it', LIMIT, async () => {
  const connect = () => Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace })
  const first = await connect()
  try {
    const kinds = first.events().drain().map((e) => e.kind)
    const uploads = first.events().drain().filter((e) => e.kind === 'Uploading')
    assert.equal(uploads.length, 1, `${kinds}`)
    const [upload] = uploads
    assert.equal(upload.namespace, ns.namespace)
    assert.ok(upload.parts >= 2, `the loader and kt-shadow's parts: ${upload.parts}`)
    assert.ok(upload.bytes > 0, `${upload.bytes}`)
    assert.match(upload.message, /uploading kt's agent/)
    assert.ok(kinds.indexOf('Uploading') < kinds.indexOf('Creating'), `${kinds}`)
    assert.ok((await first.resolve('echo')).length > 0)
  } finally {
    await first.close()
  }
  const second = await connect()
  try {
    const kinds = second.events().drain().map((e) => e.kind)
    assert.ok(!kinds.includes('Uploading'), `the parts are reused: ${kinds}`)
    assert.ok((await second.resolve('echo')).length > 0)
  } finally {
    await second.close()
  }
})
