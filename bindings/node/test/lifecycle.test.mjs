// Opening and ending sessions: asyncDispose, the ways connect fails (each with its own
// code, none crashing the process, none leaving objects behind), VPN mode without the
// capability, and a session node exits without closing.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

import { asyncDispose, recoverSystemDns, Session } from '../index.js'
import { adminKubeconfig, kubectl, labNamespace, NODE_DIR, objectsLabelled } from './lab.mjs'

const LIMIT = { timeout: 180_000 }
const INDEX = new URL('../index.js', import.meta.url).href
const KT_OBJECTS = 'app.kubernetes.io/managed-by=kt'
let ns

before(() => {
  ns = labNamespace('kt-node-life')
}, LIMIT)

after(() => ns?.delete())

function expectCode(code, kind) {
  return (e) => {
    assert.ok(e instanceof Error, `an Error, got ${e}`)
    assert.equal(e.code, code, e.message)
    if (kind) assert.equal(e.kind, kind, e.message)
    return true
  }
}

/** Runs `source` (an ES module) in a child node, optionally under `wrapper` (argv
 *  prefix); returns { code, stdout, stderr } without throwing on a failed exit. */
async function child(source, wrapper = []) {
  const argv = [...wrapper, process.execPath, '--input-type=module', '-e', source]
  try {
    const { stdout, stderr } = await promisify(execFile)(argv[0], argv.slice(1), {
      cwd: NODE_DIR,
      env: process.env,
    })
    return { code: 0, stdout, stderr }
  } catch (e) {
    return { code: e.code, signal: e.signal, stdout: e.stdout, stderr: e.stderr }
  }
}

test('Symbol.asyncDispose exists (or its polyfill) and is what ktconnect exports', () => {
  assert.equal(asyncDispose, Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose'))
  assert.equal(typeof Session.prototype[asyncDispose], 'function')
})

test('session[Symbol.asyncDispose]() closes the session and removes its objects (await using)', LIMIT, async () => {
  const session = await Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace })
  const id = session.id
  // The kt-shadow pod alone: no Secret (the client's key is its argument, its host key
  // never leaves it).
  assert.deepEqual(objectsLabelled(ns.namespace, `kt.dev/session=${id}`), [`pod/${session.podName}`])
  await session[asyncDispose]()
  assert.deepEqual(objectsLabelled(ns.namespace, `kt.dev/session=${id}`), [])
  await assert.rejects(session.resolve('echo'), expectCode('KT_CLOSED', 'Closed'))
  // Disposing twice (a manual close() inside an `await using` block) is fine.
  await session[asyncDispose]()
})

test('onEvent is called with every event, Creating to Closed, in order', LIMIT, async () => {
  const seen = []
  let closed
  const allSeen = new Promise((resolve) => (closed = resolve))
  const session = await Session.connect({
    kubeconfig: ns.kubeconfig,
    namespace: ns.namespace,
    onEvent: (ev) => {
      seen.push(ev)
      if (ev.kind === 'Closed') closed()
    },
  })
  await session.close()
  await allSeen
  const kinds = seen.map((e) => e.kind)
  // The first session in a namespace uploads kt's agent before it creates its pod.
  assert.equal(kinds[kinds[0] === 'Uploading' ? 1 : 0], 'Creating', `${kinds}`)
  assert.equal(kinds.at(-1), 'Closed')
  const streamed = []
  for await (const ev of session.events()) streamed.push(ev)
  assert.deepEqual(seen, streamed, 'the callback and the stream see the same events')
})

test('connect with options of the wrong shape rejects with KT_INVALID_ARGUMENT naming the option', async () => {
  const cases = [
    [42, /options must be an object, got a number/],
    ['dev', /options must be an object, got a string/],
    [[], /options must be an object, got an array/],
    [{ namespace: 5 }, /options\.namespace must be a string, got a number/],
    [{ kubeconfig: ns.kubeconfig, namspace: 'x' }, /unknown option `namspace`/],
    [{ flavour: 'dropbear' }, /options\.flavour: invalid shadow flavour `dropbear`; expected kt-shadow or openssh/],
    [{ labels: { team: 7 } }, /options\.labels\.team must be a string/],
    [{ podReadyTimeoutMs: -1 }, /podReadyTimeoutMs must be a positive number of milliseconds/],
    [{ socks5Port: 70000 }, /socks5Port must be an integer from 0 to 65535/],
    [{ dnsServer: 'ten.nine' }, /dnsServer: `ten\.nine` is not an IP address/],
    [{ vpn: { include: ['10.0.0.0/33'] } }, /options\.vpn\.include\[0\]: invalid CIDR `10\.0\.0\.0\/33`/],
    [{ vpn: { exclude: '10.0.0.0/8' } }, /vpn\.exclude must be an array of strings, got a string/],
    [{ vpn: { dns: 'magic' } }, /options\.vpn\.dns: invalid DNS mode `magic`; expected auto, resolv-conf, resolved, resolver-dir, hosts/],
    [{ vpn: { dns: 'hosts:' } }, /options\.vpn\.dns: invalid DNS mode `hosts:`/],
    [{ vpn: { dnsListen: '127.0.0.1' } }, /options\.vpn\.dnsListen: `127\.0\.0\.1` is not an address and port/],
    [{ sshPort: 0 }, /options\.sshPort must be an integer from 1 to 65535/],
    [{ shadowHeartbeatTimeoutMs: 0 }, /options\.shadowHeartbeatTimeoutMs must be a positive number of milliseconds, got 0, or null for never/],
    [{ shadowHeartbeatTimeoutMs: '10m' }, /options\.shadowHeartbeatTimeoutMs must be a number, got a string/],
    [{ shadowProbeBinary: '' }, /options\.shadowProbeBinary must not be empty/],
    [{ baseImage: ' ' }, /options\.baseImage must not be empty/],
    [{ baseImage: ['pause'] }, /options\.baseImage must be a string, got an array/],
    [{ agentDir: '' }, /options\.agentDir must not be empty/],
    [{ agentDir: 7 }, /options\.agentDir must be a string, got a number/],
    [{ vpn: { mtu: 10 } }, /vpn\.mtu must be an integer from 576 to 65535/],
    [{ onEvent: 'print' }, /options\.onEvent must be a function, got a string/],
  ]
  for (const [options, message] of cases) {
    await assert.rejects(Session.connect(options), (e) => {
      expectCode('KT_INVALID_ARGUMENT', 'InvalidArgument')(e)
      assert.match(e.message, message)
      return true
    })
  }
  assert.deepEqual(objectsLabelled(ns.namespace, KT_OBJECTS), [])
})

test("connect parses DNS modes, flavours and ranges with kt-core's parsers: what kt accepts elsewhere is accepted", async () => {
  // Options are read in order: the last one is always wrong, so each call rejects
  // (without touching the cluster) after accepting the values before it.
  const accepted = [
    { vpn: { dns: 'hosts:dev,staging' } },
    { vpn: { dns: 'Resolv_Conf' } },
    { vpn: { include: ['10.96.0.10'], exclude: ['fd00::1', '10.0.0.0/8'] } },
    { vpn: { dnsListen: '127.0.0.2:53' } },
    { flavour: 'OpenSSH' },
    { shadowHeartbeatTimeoutMs: null },
    { shadowHeartbeatTimeoutMs: 90_000, sshPort: 2022, sshdPath: '/usr/bin/sshd', shadowProbeBinary: '/bin/kt-shadow' },
  ]
  for (const options of accepted) {
    await assert.rejects(Session.connect({ ...options, podReadyTimeoutMs: -1 }), (e) => {
      expectCode('KT_INVALID_ARGUMENT', 'InvalidArgument')(e)
      assert.match(e.message, /podReadyTimeoutMs must be a positive number/, JSON.stringify(options))
      return true
    })
  }
})

test('shadowHeartbeatTimeoutMs sets the shadow watchdog (whole seconds); null turns it off', LIMIT, async () => {
  const args = async (options) => {
    const session = await Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace, ...options })
    try {
      const pod = JSON.parse(kubectl('get', 'pod', session.podName, '-n', ns.namespace, '-o', 'json'))
      const [shadow] = pod.spec.containers
      return [...(shadow.command ?? []), ...(shadow.args ?? [])]
    } finally {
      await session.close()
    }
  }
  const timed = await args({ shadowHeartbeatTimeoutMs: 89_500 })
  assert.equal(timed[timed.indexOf('--heartbeat-timeout') + 1], '90', `${timed}`)
  const never = await args({ shadowHeartbeatTimeoutMs: null })
  assert.ok(!never.includes('--heartbeat-timeout'), `${never}`)
  const byDefault = await args({})
  assert.equal(byDefault[byDefault.indexOf('--heartbeat-timeout') + 1], '600', `${byDefault}`)
})

test('connect with a kubeconfig file that does not exist rejects with KT_KUBECONFIG naming the file', async () => {
  await assert.rejects(Session.connect({ kubeconfig: '/nonexistent/kubeconfig', namespace: 'x' }), (e) => {
    expectCode('KT_KUBECONFIG', 'ReadKubeconfig')(e)
    assert.match(e.message, /\/nonexistent\/kubeconfig/)
    assert.match(e.message, /No such file or directory/)
    return true
  })
})

test('connect with a context the kubeconfig lacks rejects with KT_KUBECONFIG', LIMIT, async () => {
  await assert.rejects(
    Session.connect({ kubeconfig: ns.kubeconfig, context: 'no-such-context', namespace: ns.namespace }),
    (e) => {
      expectCode('KT_KUBECONFIG')(e)
      assert.match(e.message, /no-such-context/)
      return true
    },
  )
})

test('connect to a namespace that does not exist rejects with KT_NOT_FOUND', LIMIT, async () => {
  await assert.rejects(
    Session.connect({ kubeconfig: adminKubeconfig(), namespace: 'kt-node-no-such-namespace' }),
    (e) => {
      expectCode('KT_NOT_FOUND', 'NamespaceNotFound')(e)
      assert.match(e.message, /namespace `kt-node-no-such-namespace` does not exist/)
      return true
    },
  )
})

test('connect outside the namespace its Role covers rejects with KT_FORBIDDEN and creates nothing', LIMIT, async () => {
  await assert.rejects(Session.connect({ kubeconfig: ns.kubeconfig, namespace: 'default' }), (e) => {
    expectCode('KT_FORBIDDEN', 'Forbidden')(e)
    assert.match(e.message, /kt-core\/rbac\/connect\.yaml/)
    return true
  })
  assert.deepEqual(objectsLabelled('default', KT_OBJECTS), [])
})

test('VPN mode without CAP_NET_ADMIN rejects with KT_NEEDS_CAPABILITY and creates nothing', LIMIT, async () => {
  const source = `
    import { readFileSync } from 'node:fs'
    import { Session } from ${JSON.stringify(INDEX)}
    const capEff = BigInt('0x' + readFileSync('/proc/self/status', 'utf8').match(/CapEff:\\s*(\\w+)/)[1])
    const netAdmin = (capEff >> 12n) & 1n
    try {
      await Session.connect({ kubeconfig: ${JSON.stringify(ns.kubeconfig)}, namespace: ${JSON.stringify(ns.namespace)}, vpn: {} })
      console.log(JSON.stringify({ netAdmin: Number(netAdmin), connected: true }))
    } catch (e) {
      console.log(JSON.stringify({ netAdmin: Number(netAdmin), code: e.code, kind: e.kind, message: e.message }))
    }`
  const run = await child(source, ['setpriv', '--inh-caps=-all', '--bounding-set=-net_admin'])
  assert.equal(run.code, 0, `child failed: ${run.stderr}`)
  const result = JSON.parse(run.stdout.trim().split('\n').at(-1))
  assert.equal(result.netAdmin, 0, 'the child must run without CAP_NET_ADMIN')
  assert.equal(result.connected, undefined, 'connect must fail without CAP_NET_ADMIN')
  assert.equal(result.code, 'KT_NEEDS_CAPABILITY', result.message)
  assert.equal(result.kind, 'NeedsCapability')
  assert.match(result.message, /CAP_NET_ADMIN/)
  assert.match(result.message, /proxy mode/)
  assert.deepEqual(objectsLabelled(ns.namespace, KT_OBJECTS), [])
})

test('node closes a session the program never closed before it exits, onEvent callback and all', LIMIT, async () => {
  const source = `
    import { Session } from ${JSON.stringify(INDEX)}
    const s = await Session.connect({
      kubeconfig: ${JSON.stringify(ns.kubeconfig)},
      namespace: ${JSON.stringify(ns.namespace)},
      onEvent: () => {},
    })
    console.log(s.id)`
  const run = await child(source)
  try {
    assert.equal(run.code, 0, `exit ${run.code} ${run.signal ?? ''}: ${run.stderr}`)
    assert.doesNotMatch(run.stderr, /panic/)
    assert.match(run.stderr, /closing 1 session\(s\) the program left open/)
    const id = run.stdout.trim()
    assert.ok(id, 'the child printed its session id')
    assert.deepEqual(objectsLabelled(ns.namespace, `kt.dev/session=${id}`), [], 'left after exit')
  } finally {
    const id = run.stdout?.trim()
    if (id) kubectl('delete', 'pods,secrets', '-n', ns.namespace, '-l', `kt.dev/session=${id}`, '--wait=false')
  }
})

test('recoverSystemDns() resolves to what it undid (nothing here) and rejects with KT_VPN when it cannot look', async () => {
  assert.equal(typeof recoverSystemDns, 'function')
  const dir = mkdtempSync(join(tmpdir(), 'ktconnect-state-'))
  try {
    const source = `
      import { recoverSystemDns } from ${JSON.stringify(INDEX)}
      try {
        console.log(JSON.stringify({ done: await recoverSystemDns() }))
      } catch (e) {
        console.log(JSON.stringify({ code: e.code, message: e.message }))
      }`
    const run = async (stateDir) => {
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', source], {
        env: { ...process.env, KT_STATE_DIR: stateDir },
      })
      return JSON.parse(stdout.trim().split('\n').at(-1))
    }
    // No restore records: nothing to undo.
    assert.deepEqual(await run(dir), { done: [] })
    // The record directory is under a regular file: it cannot be listed.
    writeFileSync(join(dir, 'file'), '')
    const failed = await run(join(dir, 'file'))
    assert.equal(failed.code, 'KT_VPN', failed.message)
    assert.match(failed.message, /system DNS: cannot list restore records in .*file\/restore/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
