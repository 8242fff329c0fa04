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
  assert.deepEqual(surface.functions, ['recover_system_dns'])
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
