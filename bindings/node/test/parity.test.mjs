// Parity with kt-core: every setting, session operation and function kt-core lists in
// kt_core::surface is reachable from Node. A name kt-core adds fails this test until
// the binding exposes it (or this file's rename table says under which name it does).
// Option keys are checked against what Session.connect really accepts: a key the
// binding does not know is rejected as unknown. No cluster needed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import * as ktconnect from '../index.js'
import { NODE_DIR } from './lab.mjs'

const api = ktconnect.default ?? ktconnect
const { Session } = api
const surface = api[Symbol.for('ktconnect.native')].__surface()
const dts = readFileSync(join(NODE_DIR, 'index.d.ts'), 'utf8')

const camel = (snake) => snake.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase())

// kt-core names whose Node key is not simply their camelCase: builders called once per
// item take a plural collection, durations are numbers of milliseconds.
const CONNECT_RENAMES = {
  label: 'labels',
  annotation: 'annotations',
  image_pull_secret: 'imagePullSecrets',
  pod_ready_timeout: 'podReadyTimeoutMs',
  port_forward_timeout: 'portForwardTimeoutMs',
  heartbeat_interval: 'heartbeatIntervalMs',
  shadow_heartbeat_timeout: 'shadowHeartbeatTimeoutMs',
  reconnect_timeout: 'reconnectTimeoutMs',
  connect_timeout: 'connectTimeoutMs',
  dns_timeout: 'dnsTimeoutMs',
  close_timeout: 'closeTimeoutMs',
}
const VPN_RENAMES = {}
// Swap and expose options: durations in milliseconds.
const INBOUND_RENAMES = { restore_ttl: 'restoreTtlMs' }
const OPERATION_RENAMES = {}
const FUNCTION_RENAMES = {}

/** The rejection of `Session.connect(options)`, which must come before any cluster call. */
async function rejection(options) {
  try {
    await Session.connect(options)
  } catch (e) {
    return e
  }
  assert.fail(`Session.connect(${JSON.stringify(options)}) resolved`)
}

/** The members of `export interface name { ... }` in index.d.ts. */
function declared(name) {
  const body = dts.match(new RegExp(`export interface ${name} \\{([^]*?)\\n\\}`))
  assert.ok(body, `interface ${name} in index.d.ts`)
  return [...body[1].matchAll(/\n\s*(\w+)\?: /g)].map((m) => m[1])
}

test('kt-core lists the surface this test compares with', () => {
  assert.ok(surface.connectOptions.includes('namespace'), `${surface.connectOptions}`)
  assert.ok(surface.vpnOptions.includes('include'), `${surface.vpnOptions}`)
  assert.ok(surface.sessionOperations.includes('forward'), `${surface.sessionOperations}`)
  assert.deepEqual(surface.functions, ['recover_system_dns', 'clean', 'recover'])
  assert.ok(surface.sessionOperations.includes('swap'), `${surface.sessionOperations}`)
  assert.ok(surface.swapOptions.includes('restore_ttl'), `${surface.swapOptions}`)
  assert.ok(surface.exposeOptions.includes('service_type'), `${surface.exposeOptions}`)
  assert.ok(surface.swapOperations.includes('connections'), `${surface.swapOperations}`)
  assert.ok(surface.exposeOperations.includes('service'), `${surface.exposeOperations}`)
  assert.ok(surface.sessionOperations.includes('mesh'), `${surface.sessionOperations}`)
  assert.ok(surface.meshOptions.includes('restore_ttl'), `${surface.meshOptions}`)
  assert.ok(surface.meshOperations.includes('header'), `${surface.meshOperations}`)
})

test('a key Session.connect does not know is rejected as unknown (the probe below means something)', async () => {
  const e = await rejection({ noSuchOption: 1 })
  assert.equal(e.code, 'KT_INVALID_ARGUMENT')
  assert.match(e.message, /unknown option `noSuchOption`; known options: kubeconfig, context/)
  const v = await rejection({ vpn: { noSuchOption: 1 } })
  assert.match(v.message, /unknown option `options\.vpn\.noSuchOption`; known VPN options: include/)
})

test('every kt-core connect setting is a Session.connect option key', async () => {
  const keys = declared('ConnectOptions')
  for (const name of surface.connectOptions) {
    const key = CONNECT_RENAMES[name] ?? camel(name)
    // A symbol is no valid value of any option: the key is read and its value refused.
    const e = await rejection({ [key]: Symbol('probe') })
    assert.equal(e.code, 'KT_INVALID_ARGUMENT', `${name} -> ${key}: ${e.message}`)
    assert.doesNotMatch(e.message, /unknown option/, `kt-core's ${name} as ${key}`)
    assert.match(e.message, new RegExp(`options\\.${key}\\b`), `${name} -> ${key}: ${e.message}`)
    assert.ok(keys.includes(key), `${key} in ConnectOptions of index.d.ts`)
  }
})

test('every kt-core VPN setting is a key of the vpn option', async () => {
  const keys = declared('VpnConnectOptions')
  for (const name of surface.vpnOptions) {
    const key = VPN_RENAMES[name] ?? camel(name)
    const e = await rejection({ vpn: { [key]: Symbol('probe') } })
    assert.equal(e.code, 'KT_INVALID_ARGUMENT', `${name} -> ${key}: ${e.message}`)
    assert.doesNotMatch(e.message, /unknown option/, `kt-core's VPN ${name} as vpn.${key}`)
    assert.match(e.message, new RegExp(`options\\.vpn\\.${key}\\b`), `${name} -> ${key}: ${e.message}`)
    assert.ok(keys.includes(key), `${key} in VpnConnectOptions of index.d.ts`)
  }
})

test('every kt-core session operation is a Session method or getter', () => {
  const cls = dts.match(/export declare class Session \{([^]*?)\n\}/)[1]
  for (const name of surface.sessionOperations) {
    const member = OPERATION_RENAMES[name] ?? camel(name)
    assert.ok(member in Session.prototype, `kt-core's ${name} as Session.${member}`)
    assert.match(cls, new RegExp(`\\n\\s*(get )?${member}\\(`), `Session.${member} in index.d.ts`)
  }
})

test('every kt-core function is a module export', () => {
  for (const name of surface.functions) {
    const fn = FUNCTION_RENAMES[name] ?? camel(name)
    assert.equal(typeof api[fn], 'function', `kt-core's ${name} as ${fn}`)
    assert.match(dts, new RegExp(`export declare function ${fn}\\(`), `${fn} in index.d.ts`)
  }
})

// kt-core's swap and expose options are keys of SwapOptions / ExposeOptions; that
// session.swap and session.expose read each of them (and refuse unknown ones) is
// checked with a real session in swap.test.mjs.
const inboundKey = (name) => INBOUND_RENAMES[name] ?? camel(name)

test('every kt-core swap, expose and mesh option is a key of SwapOptions / ExposeOptions / MeshOptions in index.d.ts', () => {
  for (const [names, iface] of [
    [surface.swapOptions, 'SwapOptions'],
    [surface.exposeOptions, 'ExposeOptions'],
    [surface.meshOptions, 'MeshOptions'],
  ]) {
    const body = dts.match(new RegExp(`export interface ${iface} \\{([^]*?)\\n\\}`))
    assert.ok(body, `interface ${iface} in index.d.ts`)
    const keys = [...body[1].matchAll(/\n\s*(\w+)\??: /g)].map((m) => m[1])
    assert.ok(keys.includes('expose'), `${iface}.expose`)
    for (const name of names) assert.ok(keys.includes(inboundKey(name)), `kt-core's ${name} as ${iface}.${inboundKey(name)}`)
  }
})

test('every kt-core swap, expose and mesh operation is a member of Swap / Expose / Mesh', () => {
  for (const [names, cls] of [
    [surface.swapOperations, api.Swap],
    [surface.exposeOperations, api.Expose],
    [surface.meshOperations, api.Mesh],
  ]) {
    const decl = dts.match(new RegExp(`export declare class ${cls.name} \\{([^]*?)\\n\\}`))
    assert.ok(decl, `class ${cls.name} in index.d.ts`)
    for (const name of names) {
      const member = camel(name)
      assert.ok(member in cls.prototype, `kt-core's ${name} as ${cls.name}.${member}`)
      assert.match(decl[1], new RegExp(`\\n\\s*(get )?${member}\\(`), `${cls.name}.${member} in index.d.ts`)
    }
    assert.equal(typeof cls.prototype[api.asyncDispose], 'function', `${cls.name}[Symbol.asyncDispose]`)
  }
})

test('clean and recover take every connect option and dryRun, and refuse unknown keys before any cluster call', async () => {
  for (const call of [(o) => api.clean(o), (o) => api.recover('deploy/web', o)]) {
    for (const name of [...surface.connectOptions, 'dry_run']) {
      const key = CONNECT_RENAMES[name] ?? camel(name)
      const e = await call({ [key]: Symbol('probe') }).then(
        () => assert.fail(`${key} resolved`),
        (e) => e,
      )
      assert.equal(e.code, 'KT_INVALID_ARGUMENT', `${key}: ${e.message}`)
      assert.doesNotMatch(e.message, /unknown option/, key)
      assert.match(e.message, new RegExp(`options\\.${key}\\b`), `${key}: ${e.message}`)
    }
    const e = await call({ dryrun: true }).then(() => assert.fail('resolved'), (e) => e)
    assert.match(e.message, /unknown option `dryrun`; known options: .*dryRun/)
  }
  await assert.rejects(api.recover(), (e) => e.code === 'KT_INVALID_ARGUMENT' && /target is required/.test(e.message))
  await assert.rejects(api.recover(''), (e) => e.code === 'KT_INVALID_ARGUMENT' && /target must not be empty/.test(e.message))
})
