// ktconnect: loads the native addon (built from src/ by ./build.sh or ./run-tests)
// and adds what Node-API cannot declare: Symbol.asyncDispose on Session, so that
// `await using session = await Session.connect(...)` closes it.
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

Object.defineProperty(native.Session.prototype, asyncDispose, {
  value: function dispose() {
    return this.close()
  },
  writable: true,
  configurable: true,
})

module.exports.Session = native.Session
module.exports.EventStream = native.EventStream
module.exports.asyncDispose = asyncDispose
