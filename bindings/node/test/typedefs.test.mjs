// index.d.ts is committed; it must be exactly what scripts/gen-dts.mjs makes from the
// type definitions napi-derive records while compiling the addon. ./run-tests passes
// those of its own build in KTCONNECT_TYPEDEFS; run alone, this test builds the addon.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { generate } from '../scripts/gen-dts.mjs'
import { NODE_DIR } from './lab.mjs'

function typedefs() {
  if (process.env.KTCONNECT_TYPEDEFS) return readFileSync(process.env.KTCONNECT_TYPEDEFS, 'utf8')
  const dir = mkdtempSync(join(tmpdir(), 'ktconnect-typedefs-'))
  try {
    execFileSync(join(NODE_DIR, 'build.sh'), ['--keep-typedefs', join(dir, 'typedefs')], { stdio: 'inherit' })
    return readFileSync(join(dir, 'typedefs'), 'utf8')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

test('the committed index.d.ts matches the #[napi] items it is generated from', { timeout: 900_000 }, () => {
  const expected = generate(typedefs())
  const committed = readFileSync(join(NODE_DIR, 'index.d.ts'), 'utf8')
  assert.equal(committed, expected, 'index.d.ts is out of date: run bindings/node/build.sh and commit it')
})

test('index.d.ts declares every class and function the addon exports', async () => {
  const ktconnect = await import('../index.js')
  const dts = readFileSync(join(NODE_DIR, 'index.d.ts'), 'utf8')
  for (const name of Object.keys(ktconnect.default ?? ktconnect)) {
    if (name === 'default') continue
    assert.match(dts, new RegExp(`export declare (class|const|function) ${name}\\b`), `${name} in index.d.ts`)
  }
  for (const method of ['connect', 'forward', 'forwardUdp', 'udpChannel', 'resolve', 'env', 'events', 'close']) {
    assert.match(dts, new RegExp(`\\b${method}\\(`), `Session.${method} in index.d.ts`)
  }
})
