#!/usr/bin/env node
// Connects to a cluster, fetches http://echo.<namespace>/hello through the session's
// HTTP proxy, prints the answer and closes the session (removing the shadow pod).
//
//   bindings/node/build.sh                        # once: builds the addon
//   node examples/node/connect.mjs [--kubeconfig FILE] [--namespace NS]
//
// Without --kubeconfig, KUBECONFIG or ~/.kube/config is used; without --namespace,
// the context's namespace. In the lab: testbed/test-namespace create demo --restricted
// prints a namespace and a kubeconfig to use.
import http from 'node:http'
import { parseArgs } from 'node:util'

import { Session } from '../../bindings/node/index.js'

const { values: args } = parseArgs({
  options: { kubeconfig: { type: 'string' }, namespace: { type: 'string' } },
})

// A GET through an HTTP proxy: the request line carries the absolute URL, which the
// proxy (kt's, on 127.0.0.1) resolves and connects to inside the cluster. (With the
// `undici` package: fetch(url, { dispatcher: new ProxyAgent(`http://${proxy}`) }).)
function getViaProxy(proxy, url) {
  const [host, port] = proxy.split(':')
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port: Number(port), path: url, headers: { host: new URL(url).host } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
  })
}

const session = await Session.connect({ kubeconfig: args.kubeconfig, namespace: args.namespace })
try {
  console.log(`session ${session.id}: shadow pod ${session.namespace}/${session.podName}`)
  console.log(`HTTP proxy ${session.httpProxyAddr}, SOCKS5 proxy ${session.socks5Addr}`)
  const url = `http://echo.${session.namespace}/hello`
  const res = await getViaProxy(session.httpProxyAddr, url)
  console.log(`GET ${url} -> ${res.status}`)
  console.log(res.body.trim())
  if (res.status !== 200) process.exitCode = 1
} finally {
  await session.close()
  console.log('closed: the shadow pod is gone')
}
