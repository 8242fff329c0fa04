// Swap, expose and mesh from Node, against the lab, in a namespace enforcing the restricted
// Pod Security Standard, as a ServiceAccount bound to the shipped Roles only (vpn.yaml
// and inbound.yaml): a pod in the cluster calls the Service and gets the answer of a
// server in this process (a token only it knows); after close the Service and the
// Deployment equal a snapshot taken before and no kt object is left.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'

import { asyncDispose, clean, Expose, Mesh, recover, Session, Swap } from '../index.js'
import * as ktconnect from '../index.js'
import { kubectl, labNamespace } from './lab.mjs'

const api = ktconnect.default ?? ktconnect
const surface = api[Symbol.for('ktconnect.native')].__surface()
const LIMIT = { timeout: 300_000 }
// Every kind of object kt may create for a swap or an expose.
const KT_KINDS = 'pods,services,leases,serviceaccounts,roles,rolebindings,secrets'
const CLIENT_POD = `
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 0
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: client
    image: kt.invalid/shell
    command: ["sleep", "3600"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
`

let ns
let session
let server
let token
let port

before(async () => {
  ns = labNamespace('kt-node-swap', { role: 'inbound' })
  const labels = kubectl('get', 'namespace', ns.namespace, '-o', 'jsonpath={.metadata.labels}')
  assert.match(labels, /restricted/)
  execFileSync('bash', ['-c', `source "\${KTLAB_STATE:-/run/ktlab}/env" && kubectl -n ${ns.namespace} apply -f -`], {
    input: CLIENT_POD,
    stdio: ['pipe', 'ignore', 'inherit'],
  })
  kubectl('-n', ns.namespace, 'wait', '--for=condition=Ready', 'pod/client', '--timeout=120s')
  token = `node-laptop-${randomBytes(8).toString('hex')}`
  server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-length': token.length, connection: 'close' })
    res.end(token)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  port = server.address().port
  session = await Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace })
}, LIMIT)

after(async () => {
  await session?.close()
  server?.close()
  ns?.delete()
})

/** curl from the client pod, with `headers`; the body (rejects when it fails).
 *  Asynchronous: the local server answering it runs on this process's event loop. */
async function curl(url, headers = {}) {
  const sent = Object.entries(headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`])
  const { stdout } = await promisify(execFile)(
    'bash',
    ['-c', `source "\${KTLAB_STATE:-/run/ktlab}/env" && kubectl "$@"`, 'kubectl', '-n', ns.namespace, 'exec', 'client', '--', 'curl', '-sS', '--fail', '--max-time', '10', ...sent, url],
    { encoding: 'utf8' },
  )
  return stdout
}

/** Waits (bounded) until `url` (sent with `headers`) answers `want` from the client
 *  pod: kube-proxy applies a new selector asynchronously, as in any cluster. */
async function waitAnswer(url, want, headers = {}) {
  const deadline = Date.now() + 60_000
  let last
  while (Date.now() < deadline) {
    try {
      last = await curl(url, headers)
      if (last.includes(want)) return
    } catch (e) {
      last = e.message
    }
    await new Promise((r) => setTimeout(r, 300))
  }
  assert.fail(`${url} from the client pod never answered ${want}; last: ${last}`)
}

/** What must be equal before and after: spec, labels, annotations. */
function snapshot(object) {
  const v = JSON.parse(kubectl('-n', ns.namespace, 'get', object, '-o', 'json'))
  return { spec: v.spec, labels: v.metadata.labels, annotations: v.metadata.annotations }
}

/** kt's objects other than the session's own. */
function ktObjectsBut(sessionId) {
  return kubectl('-n', ns.namespace, 'get', KT_KINDS, '-l', `app.kubernetes.io/managed-by=kt,kt.dev/session!=${sessionId}`, '-o', 'name').trim()
}

async function drain(stream) {
  const all = []
  for await (const ev of stream) all.push(ev)
  return all
}

test('a selector swap of the echo Deployment reaches this process, and close puts everything back', LIMIT, async () => {
  const svcBefore = snapshot('service/echo')
  const deployBefore = snapshot('deployment/echo')
  const seen = []
  const swap = await session.swap('deploy/echo', { expose: [`${port}:80`], onEvent: (e) => seen.push(e) })
  let events
  try {
    assert.ok(swap instanceof Swap)
    assert.equal(swap.mode, 'selector')
    assert.equal(swap.target, 'deploy/echo')
    assert.deepEqual(swap.services, ['echo'])
    assert.deepEqual(swap.ports, [{ local: port, remote: 8080 }])
    assert.ok(swap.id && swap.podName)
    await waitAnswer('http://echo/hello', token)
    assert.ok(swap.connections >= 1, `${swap.connections}`)
    const held = JSON.parse(kubectl('-n', ns.namespace, 'get', 'service/echo', '-o', 'json'))
    assert.equal(held.spec.selector['kt.dev/swap'], swap.id)
    events = swap.events()
  } finally {
    // What `await using swap = ...` calls.
    await swap[asyncDispose]()
  }
  const kinds = (await drain(events)).map((e) => e.kind)
  for (const kind of ['Listening', 'SelectorSwitched', 'Inbound', 'Restored']) assert.ok(kinds.includes(kind), `${kind} in ${kinds}`)
  assert.equal(kinds.at(-1), 'Closed')
  const inbound = seen.find((e) => e.kind === 'Inbound')
  assert.ok(inbound && inbound.port === 8080 && inbound.peer, JSON.stringify(seen))

  assert.deepEqual(snapshot('service/echo'), svcBefore)
  assert.deepEqual(snapshot('deployment/echo'), deployBefore)
  assert.equal(ktObjectsBut(session.id), '')
  // The original pods serve again. kube-proxy applies the restored selector
  // asynchronously: a request right after close() can still be refused (reported to
  // kt-core), so this waits (bounded) for the echo app's own answer.
  await waitAnswer('http://echo/hello', '"pod":"echo-')
  await swap.close() // again: nothing to do
})

test('a scale swap takes the workload, and a second swap of it rejects with KT_CONFLICT', LIMIT, async () => {
  const deployBefore = snapshot('deployment/echo')
  const svcBefore = snapshot('service/echo')
  const swap = await session.swap('deploy/echo', { expose: `${port}:http`, mode: 'scale', restoreTtlMs: 20_000 })
  let events
  try {
    assert.equal(swap.mode, 'scale')
    assert.deepEqual(swap.ports, [{ local: port, remote: 8080 }])
    assert.equal(kubectl('-n', ns.namespace, 'get', 'deployment/echo', '-o', 'jsonpath={.spec.replicas}').trim(), '0')
    await waitAnswer('http://echo/hello', token)
    await assert.rejects(session.swap('deploy/echo', { expose: `${port}:http`, mode: 'scale' }), (e) => {
      assert.equal(e.code, 'KT_CONFLICT', e.message)
      assert.equal(e.kind, 'TargetHeld')
      assert.ok(e.message.includes(swap.id) && e.message.includes('since'), e.message)
      return true
    })
    events = swap.events()
  } finally {
    await swap.close()
  }
  const scaled = (await drain(events)).filter((e) => e.kind === 'Scaled')
  assert.deepEqual(scaled.map((e) => [e.from, e.to]).slice(0, 1), [[1, 0]])
  assert.deepEqual(snapshot('deployment/echo'), deployBefore)
  assert.deepEqual(snapshot('service/echo'), svcBefore)
  assert.equal(kubectl('-n', ns.namespace, 'get', 'deployment/echo', '-o', 'jsonpath={.status.readyReplicas}').trim(), '1')
  assert.equal(ktObjectsBut(session.id), '')
})

test('expose publishes this process as a new Service; an existing name is refused', LIMIT, async () => {
  await assert.rejects(session.expose('echo', { expose: `${port}` }), (e) => e.code === 'KT_CONFLICT')
  assert.equal(ktObjectsBut(session.id), '')
  const preview = await session.expose('preview', { expose: `${port}:80` })
  try {
    assert.ok(preview instanceof Expose)
    assert.equal(preview.service, 'preview')
    assert.deepEqual(preview.ports, [{ local: port, remote: 80 }])
    await waitAnswer('http://preview/x', token)
    assert.ok(preview.connections >= 1)
  } finally {
    await preview[asyncDispose]()
  }
  assert.throws(() => kubectl('-n', ns.namespace, 'get', 'service/preview'), /not found/i)
  assert.equal(ktObjectsBut(session.id), '')
})

test('a mesh sends requests with its header here and the rest to the echo pods; the same value rejects with KT_CONFLICT', LIMIT, async () => {
  const svcBefore = snapshot('service/echo')
  const deployBefore = snapshot('deployment/echo')
  const seen = []
  const mesh = await session.mesh('svc/echo', { expose: [`${port}:80`], onEvent: (e) => seen.push(e) })
  let events
  let header
  try {
    assert.ok(mesh instanceof Mesh)
    header = mesh.header
    assert.deepEqual(Object.keys(header), ['version'])
    const value = header.version
    assert.ok(value)
    assert.equal(mesh.rule, `version=${value}`)
    assert.equal(mesh.service, 'echo')
    assert.deepEqual(mesh.ports, [{ local: port, remote: 8080 }])
    assert.ok(mesh.id && mesh.podName && mesh.router && mesh.router !== mesh.podName)

    // With the header: this process; without it, or another value: the echo pods.
    await waitAnswer('http://echo/mine', token, header)
    const plain = JSON.parse(await curl('http://echo/plain'))
    assert.equal(plain.path, '/plain')
    const other = JSON.parse(await curl('http://echo/other', { version: `not-${value}` }))
    assert.equal(other.path, '/other')
    assert.equal(await curl('http://echo/again', header), token)
    assert.ok(mesh.connections >= 2, `${mesh.connections}`)

    // A second mesh with the same header value is refused, naming the first.
    const during = snapshot('service/echo')
    await assert.rejects(session.mesh('svc/echo', { expose: '18081:80', rule: `version:${value}`, checkLocal: false }), (e) => {
      assert.equal(e.code, 'KT_CONFLICT', e.message)
      assert.ok(e.message.includes(value), e.message)
      return true
    })
    assert.deepEqual(snapshot('service/echo'), during)
    assert.equal(await curl('http://echo/still', header), token)
    events = mesh.events()
  } finally {
    // What `await using mesh = ...` calls.
    await mesh[asyncDispose]()
  }
  const kinds = (await drain(events)).map((e) => e.kind)
  for (const kind of ['Listening', 'Routed', 'Inbound']) assert.ok(kinds.includes(kind), `${kind} in ${kinds}`)
  assert.equal(kinds.at(-1), 'Closed')
  const routed = seen.find((e) => e.kind === 'Routed')
  assert.ok(routed && routed.service === 'echo' && routed.rule === mesh.rule && routed.router, JSON.stringify(seen))

  assert.deepEqual(snapshot('service/echo'), svcBefore)
  assert.deepEqual(snapshot('deployment/echo'), deployBefore)
  assert.equal(ktObjectsBut(session.id), '')
  // The header no longer matters: the echo pods answer it.
  await waitAnswer('http://echo/back', '"path":"/back"', header)
  await mesh.close() // again: nothing to do
})

test('a mesh with a regex rule has no header to send, and routes what its rule matches', LIMIT, async () => {
  const before = snapshot('service/echo')
  const mesh = await session.mesh('svc/echo', { expose: `${port}:80`, rule: 'x-dev~^node-a.*', restoreTtlMs: 20_000 })
  try {
    assert.equal(mesh.header, null)
    assert.equal(mesh.rule, 'x-dev~^node-a.*')
    await waitAnswer('http://echo/', token, { 'x-dev': 'node-alice' })
    assert.equal(JSON.parse(await curl('http://echo/b', { 'x-dev': 'node-bob' })).path, '/b')
  } finally {
    await mesh.close()
  }
  assert.deepEqual(snapshot('service/echo'), before)
  assert.equal(ktObjectsBut(session.id), '')
})

test('swap, expose and mesh read every kt-core option, refuse unknown keys and bad values, and change nothing', LIMIT, async () => {
  const before = snapshot('service/echo')
  const key = (name) => ({ restore_ttl: 'restoreTtlMs' })[name] ?? name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())
  for (const [names, call] of [
    [surface.swapOptions, (o) => session.swap('deploy/echo', o)],
    [surface.exposeOptions, (o) => session.expose('preview', o)],
    [[...surface.meshOptions, 'rule'], (o) => session.mesh('svc/echo', o)],
  ]) {
    for (const name of [...names, 'expose']) {
      const k = key(name)
      await assert.rejects(call({ expose: '8080', [k]: Symbol('probe') }), (e) => {
        assert.equal(e.code, 'KT_INVALID_ARGUMENT', `${k}: ${e.message}`)
        assert.doesNotMatch(e.message, /unknown option/, k)
        assert.match(e.message, new RegExp(`options\\.${k}\\b`), `${k}: ${e.message}`)
        return true
      })
    }
    await assert.rejects(call({ expose: '8080', nope: 1 }), /unknown option `nope`; known options: expose/)
    await assert.rejects(call({}), /options\.expose is required/)
    await assert.rejects(call(), /needs options with `expose`/)
  }
  const bad = [
    [{ expose: '8080:HTTP' }, /options\.expose: .*`local:remote`/],
    [{ expose: [8080] }, /options\.expose\[0\] must be a string/],
    [{ expose: '8080', mode: 'everything' }, /options\.mode: .*`selector`/],
    [{ expose: '8080', restoreTtlMs: -1 }, /options\.restoreTtlMs must be a positive number/],
    [{ expose: '8080:81', checkLocal: false }, /81/],
  ]
  for (const [options, message] of bad) {
    await assert.rejects(session.swap('deploy/echo', options), (e) => {
      assert.equal(e.code, 'KT_INVALID_ARGUMENT', e.message)
      assert.match(e.message, message)
      return true
    })
  }
  await assert.rejects(
    session.expose('preview', { expose: '8080', serviceType: 'Ingress', checkLocal: false }),
    /options\.serviceType: .*ClusterIP, NodePort or LoadBalancer/,
  )
  await assert.rejects(session.mesh('svc/echo', { expose: '8080', rule: 'a=1 && /x || b=2' }), (e) => {
    assert.equal(e.code, 'KT_INVALID_ARGUMENT', e.message)
    assert.match(e.message, /options\.rule: .*mixes `&&` and `\|\|`/)
    return true
  })
  await assert.rejects(session.mesh(), /target is required/)
  const unused = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port
      s.close(() => resolve(p))
    })
  })
  await assert.rejects(session.swap('deploy/echo', { expose: `${unused}:80` }), (e) => e.code === 'KT_CONNECT' && e.message.includes(`127.0.0.1:${unused}`))
  await assert.rejects(session.swap('deploy/nope', { expose: '8080', checkLocal: false }), (e) => e.code === 'KT_NOT_FOUND')
  assert.deepEqual(snapshot('service/echo'), before)
  assert.equal(ktObjectsBut(session.id), '')
})

test('clean and recover report what they did, and recover refuses a held target', LIMIT, async () => {
  const opts = { kubeconfig: ns.kubeconfig, namespace: ns.namespace }
  const dry = await clean({ ...opts, dryRun: true })
  assert.equal(dry.dryRun, true)
  assert.ok(Array.isArray(dry.actions) && Array.isArray(dry.left))
  const swap = await session.swap('deploy/echo', { expose: `${port}:80` })
  try {
    // A live session holds it: recover refuses and changes nothing.
    await assert.rejects(recover('svc/echo', opts), (e) => e.code === 'KT_CONFLICT' && /held by kt session/.test(e.message))
    const svc = JSON.parse(kubectl('-n', ns.namespace, 'get', 'service/echo', '-o', 'json'))
    assert.equal(svc.spec.selector['kt.dev/swap'], swap.id)
  } finally {
    await swap.close()
  }
  const cleaned = await clean(opts)
  assert.equal(cleaned.dryRun, false)
  assert.ok(!cleaned.actions.some((a) => a.includes('echo')), cleaned.text)
  const report = await recover('svc/echo', { ...opts, dryRun: true })
  assert.equal(report.dryRun, true)
  assert.deepEqual(report.actions, [])
  assert.match(report.text, /nothing to clean/)
})

for (const [what, make] of [
  ['swap', `s.swap('deploy/echo', { expose: '8080', checkLocal: false, restoreTtlMs: 600000 })`],
  ['mesh', `s.mesh('svc/echo', { expose: '8080', checkLocal: false, restoreTtlMs: 600000 })`],
]) {
test(`a ${what} the program leaves open is closed before Node exits`, LIMIT, async () => {
  const before = snapshot('service/echo')
  const program = `
    const { Session } = require(${JSON.stringify(new URL('../index.js', import.meta.url).pathname)})
    ;(async () => {
      const s = await Session.connect({ kubeconfig: ${JSON.stringify(ns.kubeconfig)}, namespace: ${JSON.stringify(ns.namespace)} })
      const handle = await ${make}
      console.log(handle.id)
    })()
  `
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', program], { encoding: 'utf8', timeout: 240_000 })
  const id = stdout.trim()
  assert.match(id, /^[a-z0-9]+$/)
  // restoreTtlMs is 10 minutes: only the close at exit can have put it back already.
  assert.deepEqual(snapshot('service/echo'), before)
  assert.equal(kubectl('-n', ns.namespace, 'get', KT_KINDS, '-l', `kt.dev/session=${id}`, '-o', 'name').trim(), '')
  assert.equal(kubectl('-n', ns.namespace, 'get', 'pods', '-l', 'kt.dev/router', '-o', 'name').trim(), '')
})
}

test('examples/node/swap.mjs takes over the echo Deployment until SIGINT, then restores it', LIMIT, async () => {
  const { spawn } = await import('node:child_process')
  const { REPO } = await import('./lab.mjs')
  const before = snapshot('service/echo')
  const child = spawn(process.execPath, [
    `${REPO}/examples/node/swap.mjs`, '--kubeconfig', ns.kubeconfig, '--namespace', ns.namespace,
    '--message', `example-${token}`,
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('utf8')
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  try {
    await new Promise((resolve, reject) => {
      child.stdout.on('data', (c) => {
        out += c
        if (out.includes('Ctrl-C to restore')) resolve()
      })
      exited.then(() => reject(new Error(`the example exited early: ${out}`)))
    })
    assert.match(out, /swapped deploy\/echo \(selector mode, Services echo\): port 8080 now reaches 127\.0\.0\.1:\d+/)
    await waitAnswer('http://echo/', `example-${token}`)
  } finally {
    child.kill('SIGINT')
  }
  const { code } = await exited
  assert.equal(code, 0, out)
  assert.match(out, /restoring after [1-9]\d* connection\(s\)\nrestored\n/)
  assert.deepEqual(snapshot('service/echo'), before)
})
