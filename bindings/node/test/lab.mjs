// Shared set-up of the ktconnect tests: the lab (testbed/up) must be running; each test
// file gets a namespace of its own from testbed/test-namespace (the echo app, kt's Role
// bound to a ServiceAccount, a kubeconfig scoped to it). Nothing here skips: when the lab
// is down, labNamespace() throws and the tests fail, saying so.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const NODE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..')
export const REPO = join(NODE_DIR, '..', '..')
const LAB_ENV = process.env.KTLAB_STATE ? join(process.env.KTLAB_STATE, 'env') : '/run/ktlab/env'

function labUp() {
  if (!existsSync(LAB_ENV)) {
    throw new Error(
      `the lab is not up (${LAB_ENV} is missing): start it with \`sudo testbed/up\`; ` +
        'these tests need a running cluster and never skip',
    )
  }
}

/** Runs the lab's kubectl as the lab's admin; returns stdout. */
export function kubectl(...args) {
  labUp()
  return execFileSync('bash', ['-c', `source '${LAB_ENV}' && kubectl "$@"`, 'kubectl', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

/** The lab's admin kubeconfig (for tests that need more than the namespace Role). */
export function adminKubeconfig() {
  labUp()
  return execFileSync('bash', ['-c', `source '${LAB_ENV}' && printf %s "$KUBECONFIG"`], {
    encoding: 'utf8',
  })
}

/** A namespace with the echo app and a kubeconfig scoped to it: { namespace,
 *  kubeconfig, delete() }. It enforces the restricted Pod Security Standard unless
 *  `restricted` is false (the OpenSSH shadow runs as root). `role`: which shipped
 *  Roles the kubeconfig's ServiceAccount is bound to (testbed/test-namespace --role:
 *  `vpn` by default, `inbound` for swap and expose). */
export function labNamespace(prefix, { restricted = true, role } = {}) {
  labUp()
  const args = ['create', prefix, ...(restricted ? ['--restricted'] : []), ...(role ? ['--role', role] : [])]
  const out = execFileSync(join(REPO, 'testbed', 'test-namespace'), args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const vars = Object.fromEntries(
    out
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  )
  if (!vars.KT_TEST_NAMESPACE || !vars.KT_TEST_KUBECONFIG) {
    throw new Error(`testbed/test-namespace printed no namespace: ${out}`)
  }
  const namespace = vars.KT_TEST_NAMESPACE
  return {
    namespace,
    kubeconfig: vars.KT_TEST_KUBECONFIG,
    delete() {
      execFileSync(join(REPO, 'testbed', 'test-namespace'), ['delete', namespace], { stdio: 'inherit' })
    },
  }
}

/** Names of the pods and Secrets in `namespace` carrying `selector`. */
export function objectsLabelled(namespace, selector) {
  return kubectl('get', 'pods,secrets', '-n', namespace, '-l', selector, '-o', 'name')
    .split('\n')
    .filter((l) => l.trim() !== '')
}

/** The names of the echo pods in `namespace`. */
export function echoPods(namespace) {
  return kubectl('get', 'pods', '-n', namespace, '-l', 'app=echo', '-o', 'jsonpath={.items[*].metadata.name}')
    .split(/\s+/)
    .filter((n) => n !== '')
}
