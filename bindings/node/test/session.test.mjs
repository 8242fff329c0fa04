// One session in a namespace of its own, used the way a test harness would: HTTP
// through the proxy with undici's fetch, TCP and UDP forwards, cluster DNS, env for a
// child process, events; then close, which must leave nothing behind. A second
// session with proxyAuth checks the credentials in its URLs and that the proxies
// require them.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import dgram from 'node:dgram'
import http from 'node:http'
import net from 'node:net'
import { promisify } from 'node:util'
import { fetch, ProxyAgent } from 'undici'

import { Session } from '../index.js'
import { echoPods, kubectl, labNamespace, objectsLabelled } from './lab.mjs'

const LIMIT = { timeout: 180_000 }
let ns
let session
let proxy

before(async () => {
  ns = labNamespace('kt-node')
  session = await Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace })
  proxy = new ProxyAgent(`http://${session.httpProxyAddr}`)
}, LIMIT)

after(async () => {
  await proxy?.close()
  await session?.close()
  ns?.delete()
})

async function getJson(url, dispatcher) {
  const res = await fetch(url, { dispatcher })
  assert.equal(res.status, 200, `GET ${url}`)
  return res.json()
}

test('connect gives the session id, namespace, shadow pod and proxies on 127.0.0.1', LIMIT, () => {
  assert.match(session.id, /^[a-z0-9]+$/)
  assert.equal(session.namespace, ns.namespace)
  assert.equal(session.podName, `kt-shadow-${session.id}`)
  assert.match(session.socks5Addr, /^127\.0\.0\.1:\d+$/)
  assert.match(session.httpProxyAddr, /^127\.0\.0\.1:\d+$/)
  assert.notEqual(session.dnsServer, '')
  assert.equal(session.vpn, null)
  assert.equal(session.dnsAddr, null)
  const pods = objectsLabelled(ns.namespace, `kt.dev/session=${session.id}`)
  assert.ok(pods.includes(`pod/${session.podName}`), `shadow pod in ${pods}`)
})

test('fetch through the HTTP proxy reaches echo by its short name', LIMIT, async () => {
  const reply = await getJson('http://echo/hello', proxy)
  assert.equal(reply.path, '/hello')
  assert.equal(reply.namespace, ns.namespace)
  assert.ok(echoPods(ns.namespace).includes(reply.pod), `${reply.pod} is an echo pod`)
})

test('fetch through the HTTP proxy reaches echo by its fully qualified name', LIMIT, async () => {
  const reply = await getJson(`http://echo.${ns.namespace}.svc.cluster.local/hello`, proxy)
  assert.equal(reply.namespace, ns.namespace)
  assert.ok(echoPods(ns.namespace).includes(reply.pod), `${reply.pod} is an echo pod`)
})

test('forward to svc/echo port 80 serves the echo app on the returned local port', LIMIT, async () => {
  const local = await session.forward('svc/echo', 80)
  assert.equal(local.host, '127.0.0.1')
  assert.equal(local.address, `127.0.0.1:${local.port}`)
  const reply = await getJson(`http://${local.address}/hello`)
  assert.equal(reply.path, '/hello')
  assert.ok(echoPods(ns.namespace).includes(reply.pod), `${reply.pod} is an echo pod`)
})

test('a TCP forward to echo port 9000 returns 256 KiB byte for byte', LIMIT, async () => {
  const local = await session.forward('echo', 9000)
  const sent = randomBytes(256 * 1024)
  const received = await new Promise((resolve, reject) => {
    const chunks = []
    const sock = net.connect(local.port, local.host, () => sock.end(sent))
    sock.on('data', (c) => chunks.push(c))
    sock.on('end', () => resolve(Buffer.concat(chunks)))
    sock.on('error', reject)
  })
  assert.equal(received.length, sent.length)
  assert.ok(received.equals(sent), 'the echo returned different bytes')
})

test('a UDP forward to echo port 9001 returns the datagram', LIMIT, async () => {
  const local = await session.forwardUdp('echo', 9001)
  const sock = dgram.createSocket('udp4')
  try {
    const payload = randomBytes(512)
    const reply = await new Promise((resolve, reject) => {
      sock.on('message', resolve)
      sock.on('error', reject)
      // UDP may drop a datagram: send again until one comes back (the test's limit
      // bounds it).
      const send = () => sock.send(payload, local.port, local.host)
      send()
      const timer = setInterval(send, 1000)
      sock.on('message', () => clearInterval(timer))
    })
    assert.ok(reply.equals(payload), 'the UDP echo returned different bytes')
  } finally {
    sock.close()
  }
})

test('udpChannel to echo port 9001 sends a datagram and receives it back from the ClusterIP', LIMIT, async () => {
  const clusterIp = kubectl('get', 'svc', 'echo', '-n', ns.namespace, '-o', 'jsonpath={.spec.clusterIP}')
  const channel = await session.udpChannel('echo', 9001)
  try {
    assert.equal(channel.peerAddr, `${clusterIp}:9001`)
    const payload = randomBytes(1200)
    // UDP may drop a datagram: send again until one comes back (the test's limit
    // bounds it).
    let reply = null
    while (reply === null) {
      await channel.send(payload)
      reply = await channel.recv(1000)
    }
    assert.ok(Buffer.isBuffer(reply), 'a Buffer')
    assert.ok(reply.equals(payload), 'the UDP echo returned different bytes')
    // A Uint8Array is sent as well as a Buffer.
    const bytes = new Uint8Array([1, 2, 3])
    reply = null
    while (reply === null || reply.length !== 3) {
      await channel.send(bytes)
      reply = await channel.recv(1000)
    }
    assert.deepEqual([...reply], [1, 2, 3])
    await assert.rejects(channel.send('text'), (e) => {
      assert.equal(e.code, 'KT_INVALID_ARGUMENT')
      assert.match(e.message, /datagram must be a Buffer or Uint8Array, got a string/)
      return true
    })
    await assert.rejects(channel.send(Buffer.alloc(65_508)), (e) => {
      assert.equal(e.code, 'KT_INVALID_ARGUMENT')
      assert.match(e.message, /65508-byte datagram is longer than the 65507 bytes/)
      return true
    })
  } finally {
    channel.close()
  }
})

test('udpChannel.close() ends a waiting recv and later calls with KT_CLOSED', LIMIT, async () => {
  const channel = await session.udpChannel('echo', 9001)
  const waiting = channel.recv()
  channel.close()
  channel.close()
  for (const call of [() => waiting, () => channel.recv(10), () => channel.send(Buffer.from('x'))]) {
    await assert.rejects(call(), (e) => {
      assert.equal(e.code, 'KT_CLOSED')
      assert.equal(e.kind, 'FlowClosed')
      assert.match(e.message, /UDP flow to echo port 9001 is closed/)
      return true
    })
  }
})

test('udpChannel to an address the shadow cannot send to rejects with KT_CONNECT', LIMIT, async () => {
  // The shadow's UDP socket cannot connect to the broadcast address (EACCES without
  // SO_BROADCAST): the same Connect failure a refused TCP connection is.
  await assert.rejects(session.udpChannel('255.255.255.255', 9001), (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'KT_CONNECT', e.message)
    assert.equal(e.kind, 'Connect')
    assert.match(e.message, /cannot connect to 255\.255\.255\.255:9001 from the shadow pod/)
    return true
  })
})

test("resolve('echo') returns the echo Service's ClusterIP", LIMIT, async () => {
  const clusterIp = kubectl('get', 'svc', 'echo', '-n', ns.namespace, '-o', 'jsonpath={.spec.clusterIP}')
  assert.deepEqual(await session.resolve('echo'), [clusterIp])
  assert.deepEqual(await session.resolve(`echo.${ns.namespace}.svc.cluster.local`), [clusterIp])
})

test('resolve of a name the cluster does not know rejects with KT_NOT_FOUND naming what was tried', LIMIT, async () => {
  await assert.rejects(session.resolve('no-such-service'), (e) => {
    assert.ok(e instanceof Error)
    assert.equal(e.code, 'KT_NOT_FOUND')
    assert.equal(e.kind, 'NameNotFound')
    assert.match(e.message, /no-such-service/)
    assert.match(e.message, new RegExp(`no-such-service\\.${ns.namespace}\\.svc\\.cluster\\.local`))
    return true
  })
})

test('forward to a Service that does not exist rejects with KT_NOT_FOUND', LIMIT, async () => {
  await assert.rejects(session.forward('svc/no-such-service', 80), (e) => {
    assert.equal(e.code, 'KT_NOT_FOUND')
    assert.equal(e.kind, 'TargetNotFound')
    assert.match(e.message, /no-such-service/)
    return true
  })
})

test('forward and resolve with bad arguments reject with KT_INVALID_ARGUMENT', LIMIT, async () => {
  const cases = [
    [() => session.forward(5, 80), /target must be a string, got a number/],
    [() => session.forward('echo'), /port is required/],
    [() => session.forward('echo', 70000), /port must be an integer from 1 to 65535/],
    [() => session.forward('echo', '80'), /port must be a number, got a string/],
    [() => session.forward('', 80), /target must not be empty/],
    [() => session.forward('svc/', 80), /invalid target/],
    [() => session.forwardUdp('echo', -1), /port must be an integer/],
    [() => session.udpChannel('echo'), /port is required/],
    [() => session.udpChannel(5, 9001), /target must be a string, got a number/],
    [() => session.resolve(), /name is required/],
    [() => session.resolve({}), /name must be a string, got an object/],
  ]
  for (const [call, message] of cases) {
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof Error)
      assert.equal(e.code, 'KT_INVALID_ARGUMENT', e.message)
      assert.match(e.message, message)
      return true
    })
  }
})

test('env() sends a child process (curl) through the session', LIMIT, async () => {
  const env = session.env()
  assert.equal(env.HTTP_PROXY, `http://${session.httpProxyAddr}`)
  assert.equal(env.http_proxy, `http://${session.httpProxyAddr}`)
  assert.equal(env.ALL_PROXY, `socks5h://${session.socks5Addr}`)
  assert.match(env.NO_PROXY, /127\.0\.0\.1/)
  const { stdout } = await promisify(execFile)('curl', ['-sS', '--max-time', '60', 'http://echo/hello'], {
    env: { PATH: process.env.PATH, ...env },
  })
  const reply = JSON.parse(stdout)
  assert.ok(echoPods(ns.namespace).includes(reply.pod), `${reply.pod} is an echo pod`)
})

test('a new event stream replays connect progress; nextEvent(timeoutMs) gives null when nothing more comes', LIMIT, async () => {
  const stream = session.events()
  const backlog = stream.drain()
  const kinds = backlog.map((e) => e.kind)
  // The first session in a namespace uploads kt's agent before it creates its pod.
  assert.equal(kinds[kinds[0] === 'Uploading' ? 1 : 0], 'Creating', `${kinds}`)
  assert.ok(kinds.includes('Ready') && kinds.includes('TunnelUp'), `${kinds}`)
  assert.ok(!kinds.includes('Closing'), `${kinds}`)
  assert.deepEqual(stream.drain(), [])
  assert.equal(await stream.nextEvent(200), null)
  await assert.rejects(stream.nextEvent('soon'), (e) => {
    assert.equal(e.code, 'KT_INVALID_ARGUMENT')
    assert.match(e.message, /timeoutMs must be a number, got a string/)
    return true
  })
})

test('close removes everything labelled with the session, is idempotent, and events run from Creating to Closed', LIMIT, async () => {
  const events = session.events()
  const id = session.id
  await session.close()
  await session.close()
  assert.deepEqual(objectsLabelled(ns.namespace, `kt.dev/session=${id}`), [])

  const seen = []
  for await (const ev of events) seen.push(ev)
  const kinds = seen.map((e) => e.kind)
  // The first session in a namespace uploads kt's agent before it creates its pod.
  const first = kinds[0] === 'Uploading' ? 1 : 0
  assert.equal(kinds[first], 'Creating', `${kinds}`)
  assert.equal(kinds.at(-1), 'Closed')
  for (const k of ['Ready', 'TunnelUp', 'Closing']) assert.ok(kinds.includes(k), `${k} in ${kinds}`)
  assert.ok(kinds.indexOf('Ready') < kinds.indexOf('TunnelUp'))
  assert.ok(kinds.indexOf('TunnelUp') < kinds.indexOf('Closing'))
  const creating = seen[first]
  assert.equal(creating.namespace, ns.namespace)
  assert.equal(creating.pod, `kt-shadow-${id}`)
  assert.match(creating.message, /creating shadow pod/)
  const tunnelUp = seen.find((e) => e.kind === 'TunnelUp')
  assert.equal(tunnelUp.httpProxy, session.httpProxyAddr)
  // A stream that has ended stays ended; nextEvent says so with null.
  assert.equal(await events.nextEvent(100), null)
})

test('after close every method rejects with KT_CLOSED', LIMIT, async () => {
  for (const call of [
    () => session.resolve('echo'),
    () => session.forward('svc/echo', 80),
    () => session.forwardUdp('echo', 9001),
    () => session.udpChannel('echo', 9001),
  ]) {
    await assert.rejects(call(), (e) => {
      assert.equal(e.code, 'KT_CLOSED')
      assert.match(e.message, /closed/)
      return true
    })
  }
})

test('proxyAuth: the URLs and env() carry credentials, the proxies require them', LIMIT, async () => {
  const guarded = await Session.connect({ kubeconfig: ns.kubeconfig, namespace: ns.namespace, proxyAuth: true })
  try {
    const url = guarded.httpProxyUrl
    assert.match(url, /^http:\/\/[A-Za-z0-9]+:[A-Za-z0-9]+@127\.0\.0\.1:\d+$/)
    assert.ok(url.endsWith(`@${guarded.httpProxyAddr}`), url)
    const userinfo = url.slice('http://'.length, url.lastIndexOf('@'))
    assert.equal(guarded.socks5Url, `socks5h://${userinfo}@${guarded.socks5Addr}`)
    const env = guarded.env()
    assert.equal(env.HTTP_PROXY, url)
    assert.equal(env.ALL_PROXY, guarded.socks5Url)
    // undici takes the credentials from the URL.
    const withCredentials = new ProxyAgent(url)
    try {
      const reply = await getJson('http://echo/with-credentials', withCredentials)
      assert.equal(reply.path, '/with-credentials')
    } finally {
      await withCredentials.close()
    }
    // A request without them: 407 and the Basic challenge.
    const [host, port] = guarded.httpProxyAddr.split(':')
    const refused = await new Promise((resolve, reject) => {
      const req = http.request({ host, port, path: 'http://echo/bare', headers: { host: 'echo' } }, (res) => {
        res.resume()
        resolve(res)
      })
      req.on('error', reject)
      req.end()
    })
    assert.equal(refused.statusCode, 407)
    assert.match(refused.headers['proxy-authenticate'], /^Basic realm="kt"/)
    // A child process given env() authenticates by itself.
    const { stdout } = await promisify(execFile)('curl', ['-sS', '--max-time', '60', 'http://echo/child'], {
      env: { PATH: process.env.PATH, ...env },
    })
    assert.equal(JSON.parse(stdout).path, '/child')
  } finally {
    await guarded.close()
  }
  assert.deepEqual(objectsLabelled(ns.namespace, `kt.dev/session=${guarded.id}`), [])
})

test('proxyAuth must be a boolean', LIMIT, async () => {
  await assert.rejects(Session.connect({ proxyAuth: 'yes' }), (e) => {
    assert.equal(e.code, 'KT_INVALID_ARGUMENT')
    assert.match(e.message, /options\.proxyAuth must be a boolean, got a string/)
    return true
  })
})
