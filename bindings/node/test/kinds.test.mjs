// Every kind of error and of event kt-core has, as JavaScript sees it: each error kind
// walked through the binding's real conversion (kt-core's example error of that kind,
// rejected the way every method rejects), each event kind built the way events()
// builds them; index.d.ts must declare them all. No cluster needed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import * as ktconnect from '../index.js'
import { NODE_DIR } from './lab.mjs'

const native = (ktconnect.default ?? ktconnect)[Symbol.for('ktconnect.native')]
const dts = readFileSync(join(NODE_DIR, 'index.d.ts'), 'utf8')

// The codes Node programs branch on today; none may change or disappear.
const STABLE_CODES = [
  'KT_INVALID_ARGUMENT', 'KT_KUBECONFIG', 'KT_API_UNREACHABLE', 'KT_NOT_FOUND', 'KT_FORBIDDEN',
  'KT_API', 'KT_SHADOW', 'KT_TIMEOUT', 'KT_TUNNEL', 'KT_DNS', 'KT_CONNECT', 'KT_UNSUPPORTED',
  'KT_CLOSED', 'KT_IO', 'KT_NEEDS_CAPABILITY', 'KT_VPN', 'KT_CLEANUP', 'KT_INTERNAL',
]

const pascal = (snake) => snake.split('_').map((w) => w[0].toUpperCase() + w.slice(1)).join('')

/** The members of a string-literal union in index.d.ts (`'A' | 'B'`). */
function union(source) {
  return [...source.matchAll(/'([A-Za-z_]+)'/g)].map((m) => m[1])
}

test('every error kind rejects with an Error whose code is KT_ and the kind in upper case', async () => {
  const kinds = ktconnect.errorKinds()
  assert.ok(kinds.length >= 18, `${kinds}`)
  const codes = new Set()
  for (const name of kinds) {
    await assert.rejects(native.__errorExample(name), (e) => {
      assert.ok(e instanceof Error, `${name}: an Error, got ${e}`)
      assert.equal(e.code, `KT_${name.toUpperCase()}`, name)
      assert.equal(typeof e.message, 'string')
      assert.ok(e.message.length > 10, `${name}: message ${e.message}`)
      assert.doesNotMatch(e.message, /ConnectOptions::|VpnOptions::|kt_core::/, `${name}: names a Rust API`)
      assert.match(e.kind, /^[A-Z][A-Za-z0-9]+$/, `${name}: the variant name, got ${e.kind}`)
      assert.equal(typeof e.transient, 'boolean')
      codes.add(e.code)
      return true
    })
  }
  assert.deepEqual([...codes].sort(), kinds.map((k) => `KT_${k.toUpperCase()}`).sort(), 'one code per kind')
  for (const code of STABLE_CODES) assert.ok(codes.has(code), `${code} is still a code`)
  assert.ok(!codes.has('KT_ERROR'), 'no catch-all code')
})

test('error kind examples keep their kt-core variant name in kind', async () => {
  const expected = { not_found: 'NamespaceNotFound', closed: 'Closed', connect: 'Connect', internal: 'Keys', invalid_argument: 'InvalidArgument' }
  for (const [name, variant] of Object.entries(expected)) {
    await assert.rejects(native.__errorExample(name), (e) => {
      assert.equal(e.kind, variant, name)
      return true
    })
  }
  await assert.rejects(native.__errorExample('connect'), (e) => {
    assert.match(e.message, /cannot connect to 10\.96\.0\.1:1 from the shadow pod: connection refused/)
    return true
  })
})

test('an unknown error kind name rejects with KT_INVALID_ARGUMENT listing the kinds', async () => {
  await assert.rejects(native.__errorExample('nope'), (e) => {
    assert.equal(e.code, 'KT_INVALID_ARGUMENT')
    assert.match(e.message, /invalid error kind `nope`; expected invalid_argument, closed/)
    return true
  })
})

test('index.d.ts types KtError.code as exactly the codes of errorKinds()', () => {
  const body = dts.match(/export type KtErrorCode =([^]*?)\n\n/)
  assert.ok(body, 'KtErrorCode in index.d.ts')
  assert.deepEqual(union(body[1]), ktconnect.errorKinds().map((k) => `KT_${k.toUpperCase()}`))
  assert.match(dts, /code: KtErrorCode/)
})

test('events are { kind, message, ...fields } built from kt-core kinds and fields, in order', () => {
  const examples = native.__eventExamples()
  const byKind = Object.fromEntries(examples.map((e) => [e.kind, e]))
  assert.deepEqual(Object.keys(byKind).sort(), ktconnect.eventKinds().map(pascal).sort(), 'one example per kind')
  assert.deepEqual(ktconnect.eventKinds().slice(0, 6), ['creating', 'scheduled', 'pulling', 'image_ready', 'ready', 'tunnel_up'])
  assert.deepEqual(Object.keys(byKind.Creating), ['kind', 'message', 'namespace', 'pod', 'image'])
  assert.equal(byKind.Creating.message, 'creating shadow pod dev/kt-shadow-example (kt.invalid/kt-shadow)')
  assert.equal(byKind.Ready.podIp, '10.244.0.7')
  assert.equal(byKind.TunnelUp.socks5, '127.0.0.1:1080')
  assert.equal(byKind.TunnelUp.httpProxy, '127.0.0.1:1080')
  assert.equal(byKind.DnsInstalled.server, '127.0.0.1:1080')
  assert.deepEqual(byKind.VpnUp.routes, ['10.96.0.0/12'])
  assert.equal(byKind.Reconnecting.attempt, 1)
  assert.equal(byKind.Reconnected.attempts, 2)
  assert.deepEqual(Object.keys(byKind.Closed), ['kind', 'message'])
  assert.deepEqual(Object.keys(byKind.Scaled), ['kind', 'message', 'workload', 'from', 'to'])
  assert.equal(byKind.Scaled.from, 2)
  assert.deepEqual(byKind.Listening.ports, ['80 -> 127.0.0.1:8080'])
  assert.equal(byKind.Inbound.port, 80)
  assert.equal(byKind.Restored.object, 'Service dev/web')
  assert.deepEqual(Object.keys(byKind.Uploading), ['kind', 'message', 'namespace', 'parts', 'bytes'])
  assert.equal(byKind.Uploading.parts, 3)
  assert.equal(byKind.Uploading.bytes, 2_000_000)
  assert.match(byKind.Uploading.message, /^uploading kt's agent to namespace dev \(3 parts, 1953 KiB/)
})

test('a conflict rejects with KT_CONFLICT naming the holder', async () => {
  await assert.rejects(native.__errorExample('conflict'), (e) => {
    assert.equal(e.code, 'KT_CONFLICT')
    assert.equal(e.kind, 'TargetHeld')
    assert.match(e.message, /held by kt session .* since/)
    return true
  })
})

test('index.d.ts declares every event kind and every field an event has, with its type', () => {
  const iface = dts.match(/export interface Event \{([^]*?)\n\}/)
  assert.ok(iface, 'interface Event in index.d.ts')
  const kindLine = iface[1].match(/\n\s*kind: ([^\n]*)/)
  assert.deepEqual(union(kindLine[1]), ktconnect.eventKinds().map(pascal), 'the kind union')
  const declared = Object.fromEntries(
    [...iface[1].matchAll(/\n\s*(\w+)\??: ([^\n]*)/g)].map((m) => [m[1], m[2]]),
  )
  for (const ev of native.__eventExamples()) {
    for (const [field, value] of Object.entries(ev)) {
      assert.ok(field in declared, `${ev.kind}.${field} is declared in index.d.ts`)
      const type = Array.isArray(value) ? 'Array<string>' : typeof value
      if (field !== 'kind') assert.equal(declared[field], type, `${ev.kind}.${field}`)
    }
  }
})
