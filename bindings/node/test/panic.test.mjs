// A bug in the addon that panics must not take the Node process with it: every call,
// synchronous or asynchronous, turns the panic into a JavaScript exception. Each case
// runs in a child node process, so that a panic that aborts shows as that process
// dying rather than as the test runner vanishing. No cluster needed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { NODE_DIR } from './lab.mjs'

/** Runs `body` (an async function body with `native`, the addon) in a child node. */
function inChild(body) {
  const script = `
    const ktconnect = require(${JSON.stringify(join(NODE_DIR, 'index.js'))})
    const native = (ktconnect.default ?? ktconnect)[Symbol.for('ktconnect.native')]
    ;(async () => { ${body} })().then(() => console.log('still alive'))
  `
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
}

test('a panic in a synchronous call is a JavaScript Error and the process lives on', () => {
  const child = inChild(`
    try {
      native.__panicForTest('sync boom')
      console.log('no exception')
    } catch (e) {
      console.log('caught', e instanceof Error, JSON.stringify(e.message))
    }
  `)
  const shown = `status ${child.status} signal ${child.signal}\n${child.stdout}\n${child.stderr}`
  assert.equal(child.signal, null, shown)
  assert.equal(child.status, 0, shown)
  assert.match(child.stdout, /^caught true ".*sync boom.*"$/m, shown)
  assert.match(child.stdout, /^still alive$/m, shown)
})

test('a panic in an asynchronous call rejects its promise and the process lives on', () => {
  const child = inChild(`
    try {
      await native.__panicForTestAsync('async boom')
      console.log('no rejection')
    } catch (e) {
      console.log('caught', e instanceof Error, JSON.stringify(e.message))
    }
  `)
  const shown = `status ${child.status} signal ${child.signal}\n${child.stdout}\n${child.stderr}`
  assert.equal(child.signal, null, shown)
  assert.equal(child.status, 0, shown)
  // napi-rs rejects with its own words for a panicking future ("Panic in async
  // function"); the panic's text goes to stderr.
  assert.match(child.stdout, /^caught true ".+"$/m, shown)
  assert.match(child.stdout, /^still alive$/m, shown)
})

test('every #[napi] function and method catches panics (catch_unwind)', () => {
  const missing = []
  let functions = 0
  for (const file of readdirSync(join(NODE_DIR, 'src')).filter((f) => f.endsWith('.rs'))) {
    const source = readFileSync(join(NODE_DIR, 'src', file), 'utf8')
    // An attribute `#[napi]` / `#[napi(...)]`, then other attributes, then a `fn`.
    // Strings in the arguments may hold brackets (`ts_return_type = "Event[]"`).
    const items = source.matchAll(
      /#\[napi(?:\((?<args>(?:"[^"]*"|[^"\]])*)\))?\]\s*(?:#\[(?:"[^"]*"|[^"\]])*\]\s*)*(?<item>[^\n{]*)/g,
    )
    for (const { groups } of items) {
      if (!/\bfn\b/.test(groups.item)) continue
      functions += 1
      if (!/\bcatch_unwind\b/.test(groups.args ?? '')) missing.push(`${file}: ${groups.item.trim()}`)
    }
  }
  assert.ok(functions >= 30, `found ${functions} #[napi] functions: is the pattern stale?`)
  assert.deepEqual(missing, [], 'add catch_unwind to their #[napi] attribute')
})
