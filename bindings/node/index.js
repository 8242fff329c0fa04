// ktconnect: loads the native addon (built from src/ by ./build.sh or ./run-tests)
// and adds what Node-API cannot declare: Symbol.asyncDispose on Session, Swap, Expose
// and Mesh, so that `await using session = await Session.connect(...)` (and `await
// using swap = await session.swap(...)`) closes it.
'use strict'

const { join } = require('node:path')

// KTCONNECT_NATIVE names another build of the addon (a .node file, or the
// libktconnect_node.so cargo wrote, copied or not); by default ./ktconnect.node.
const nativePath = process.env.KTCONNECT_NATIVE || join(__dirname, 'ktconnect.node')

let native
try {
  // process.dlopen rather than require: it loads the library whatever its file name
  // ends with (require treats anything but .node as JavaScript).
  const addon = { exports: {} }
  process.dlopen(addon, nativePath)
  native = addon.exports
} catch (e) {
  const err = new Error(
    `ktconnect: cannot load the native addon ${nativePath}: ${e.message}; ` +
      'build it with bindings/node/build.sh (cargo build + copy to ktconnect.node), ' +
      'or point KTCONNECT_NATIVE at a built one',
    { cause: e },
  )
  err.code = 'KT_ADDON_NOT_FOUND'
  throw err
}

// Node 20.4+ and 22 have Symbol.asyncDispose; older ones get the well-known
// registered symbol that TypeScript's and Node's polyfills use.
const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')

for (const cls of [native.Session, native.Swap, native.Expose, native.Mesh]) {
  Object.defineProperty(cls.prototype, asyncDispose, {
    value: function dispose() {
      return this.close()
    },
    writable: true,
    configurable: true,
  })
}

// Sessions the program left open when Node runs out of work are closed before it exits
// ('beforeExit': the close is awaited, so the shadow pod and Secret are gone when the
// process ends). Held weakly: a session the program dropped is closed by the garbage
// collector instead, as before. process.exit() and signals skip this; the shadow's
// heartbeat watchdog covers those.
const open = new Set()
// Swaps, exposes and meshes the program left open, closed first (each puts the cluster back
// before its session goes).
const openHandles = new Set()
// The addon's static `connect` cannot be redefined, so the exported class is a thin
// subclass whose `connect` tracks the session; sessions are still the addon's objects,
// and `instanceof` accepts them.
class Session extends native.Session {
  static async connect(...args) {
    const session = await native.Session.connect(...args)
    open.add(new WeakRef(session))
    return session
  }

  static [Symbol.hasInstance](value) {
    return value instanceof native.Session
  }
}
/** Replaces `cls.prototype[name]` with `wrap(original)`. */
function redefine(cls, name, wrap) {
  const original = cls.prototype[name]
  Object.defineProperty(cls.prototype, name, { value: wrap(original), writable: true, configurable: true })
}
function untrack(set, value) {
  for (const ref of set) if (ref.deref() === value) set.delete(ref)
}
redefine(native.Session, 'close', (close) =>
  function closeTracked(...args) {
    untrack(open, this)
    return close.apply(this, args)
  },
)
for (const name of ['swap', 'expose', 'mesh']) {
  redefine(native.Session, name, (make) =>
    async function madeTracked(...args) {
      const handle = await make.apply(this, args)
      openHandles.add(new WeakRef(handle))
      return handle
    },
  )
}
for (const cls of [native.Swap, native.Expose, native.Mesh]) {
  redefine(cls, 'close', (close) =>
    function closeTracked(...args) {
      untrack(openHandles, this)
      return close.apply(this, args)
    },
  )
}
process.on('beforeExit', () => {
  const handles = [...openHandles].map((ref) => ref.deref()).filter(Boolean)
  openHandles.clear()
  const left = [...open].map((ref) => ref.deref()).filter(Boolean)
  open.clear()
  if (handles.length === 0 && left.length === 0) return
  const report = (what) => (results) => {
    for (const r of results) {
      if (r.status === 'rejected') process.stderr.write(`ktconnect: closing a ${what} left open: ${r.reason?.message ?? r.reason}\n`)
    }
  }
  if (handles.length > 0) {
    process.stderr.write(`ktconnect: closing ${handles.length} swap(s)/expose(s)/mesh(es) the program left open\n`)
  }
  if (left.length > 0) {
    process.stderr.write(`ktconnect: closing ${left.length} session(s) the program left open\n`)
  }
  Promise.allSettled(handles.map((h) => h.close()))
    .then(report('swap, expose or mesh'))
    .then(() => Promise.allSettled(left.map((s) => s.close())))
    .then(report('session'))
})

module.exports.Session = Session
module.exports.EventStream = native.EventStream
module.exports.UdpChannel = native.UdpChannel
module.exports.Swap = native.Swap
module.exports.Expose = native.Expose
module.exports.Mesh = native.Mesh
module.exports.clean = native.clean
module.exports.recover = native.recover
module.exports.errorKinds = native.errorKinds
module.exports.eventKinds = native.eventKinds
module.exports.recoverSystemDns = native.recoverSystemDns
module.exports.asyncDispose = asyncDispose
// The addon itself, for the tests' hooks into it (its `__` functions); not an API.
Object.defineProperty(module.exports, Symbol.for('ktconnect.native'), { value: native })
