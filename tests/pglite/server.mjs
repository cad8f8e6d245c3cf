// A real TimescaleDB (2.23, compiled into PGlite/WASM) behind the PostgreSQL wire
// protocol, so the store's TimescaleDB path is tested against the extension itself
// rather than a mock. Started by scripts/timescaledb.sh.
//
//   node server.mjs [--port N] [--data-dir DIR]
//   port: --port, else $SCCR_PGLITE_PORT, else 0 (the OS picks a free one)
//   data: --data-dir DIR keeps the database on disk; default in memory
//
// Prints exactly one `READY port=N url=postgres://...` line on stdout once it accepts
// connections (the only stdout line; callers wait for it). Exits 0 on SIGTERM/SIGINT.
//
// What differs from a real PostgreSQL server, found by trial:
// - ONE backend. pglite-socket serves one connection at a time; another is queued (not
//   refused) until the first closes, or dropped after 60 s. Session state (an open
//   transaction, prepared statements, SET values) survives into the next connection:
//   sqlx needs max_connections(1) and an after_connect of
//   `ROLLBACK; DISCARD ALL; SET search_path TO public` (DISCARD ALL alone leaves
//   search_path = pg_catalog, the backend's boot value here, and the tables vanish).
// - One database, whatever the URL names (current_database() is template1). A password
//   is asked for and any is accepted; the user is always postgres.
// - client_min_messages is debug3 (backend command line; SET it lower per session to
//   spare the client DEBUG notices).
// - COPY FROM STDIN kills the backend; this server turns it into an ordinary error.
//   COPY TO STDOUT works. Writers use INSERT ... SELECT FROM unnest($1::type[], ...).
// - No background workers: TimescaleDB policy jobs never run; tests `CALL run_job(id)`.
// Works as usual: the extended protocol (Parse/Bind, named statements, pipelining),
// transactions, advisory locks, LISTEN/NOTIFY on the one connection, TimescaleDB
// hypertables, compression, hierarchical continuous aggregates and retention.
// As in real TimescaleDB, `CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous)`
// needs WITH NO DATA inside a transaction, and `CALL refresh_continuous_aggregate()`
// refuses to run inside one.
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    'data-dir': { type: 'string' },
  },
})
const port = Number(values.port ?? process.env.SCCR_PGLITE_PORT ?? 0)
// Our stdout carries only the READY line; PGlite's own chatter goes to stderr.
console.log = console.error

// The extension must be loaded when the instance is created; CREATE EXTENSION alone
// finds no timescaledb library.
const db = await PGlite.create(values['data-dir'] ?? 'memory://', {
  extensions: { timescaledb },
})
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')

// PGlite answers an SSLRequest as if it were the startup message, which breaks every
// client that tries TLS first (psql's and sqlx's default sslmode=prefer). Answer 'N'
// (no TLS) ourselves, then hand the socket over with whatever followed put back.
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
class Server extends PGLiteSocketServer {
  handleConnection(socket) {
    const onReadable = () => {
      let chunk = socket.read()
      if (chunk === null) return
      while (chunk.length >= 8 && chunk.readInt32BE(0) === 8 &&
             [SSL_REQUEST, GSSENC_REQUEST].includes(chunk.readInt32BE(4))) {
        socket.write('N')
        chunk = chunk.subarray(8)
      }
      socket.removeListener('readable', onReadable)
      if (chunk.length > 0) socket.unshift(chunk)
      super.handleConnection(socket)
    }
    socket.on('readable', onReadable)
  }
}
// pglite-socket hands each TCP read to PGlite as if it were whole messages; a message
// split across reads (any query or bind over ~64 KiB, e.g. a writer batch) crashes the
// WASM backend ("RuntimeError: unreachable") and with it this process. Buffer until
// whole messages are in hand (without re-copying a large message on every read).
const handleData = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = function (chunk) {
  this.parts ??= []
  this.parts.push(chunk)
  this.buffered = (this.buffered ?? 0) + chunk.length
  if (this.buffered < (this.need ?? 0)) return Promise.resolve(0)
  const pending = this.parts.length === 1 ? chunk : Buffer.concat(this.parts)
  const messages = []
  let at = 0
  for (;;) {
    // The startup message has no type byte; every later one has a 1-byte type first.
    const head = this.startedUp ? 1 : 0
    this.need = head + 4
    if (pending.length < at + this.need) break
    this.need = head + pending.readInt32BE(at + head)
    if (pending.length < at + this.need) break
    const msg = pending.subarray(at, at + this.need)
    messages.push(this.startedUp ? refuseCopyFromStdin(msg) : msg)
    at += this.need
    this.startedUp = true
  }
  this.parts = at < pending.length ? [pending.subarray(at)] : []
  this.buffered = pending.length - at
  if (messages.length === 0) return Promise.resolve(0)
  return handleData.call(this, Buffer.concat(messages))
}

// COPY ... FROM STDIN also kills the WASM backend. Swap such a Query/Parse for one that
// fails inside PGlite, so the client gets an ordinary error (with the right transaction
// status) and the server lives on.
const COPY_FROM_STDIN = /\bcopy\b[^;]*\bfrom\s+stdin\b/i
const REFUSAL = "DO $$BEGIN RAISE EXCEPTION 'COPY FROM STDIN is not supported by PGlite'; END$$"
function refuseCopyFromStdin(msg) {
  const type = String.fromCharCode(msg[0])
  if (type !== 'Q' && type !== 'P') return msg
  const body = msg.subarray(5)
  // Query: text\0. Parse: name\0 text\0 int16 n, n x int32 param types.
  const nameEnd = type === 'P' ? body.indexOf(0) + 1 : 0
  const textEnd = body.indexOf(0, nameEnd)
  if (!COPY_FROM_STDIN.test(body.toString('utf8', nameEnd, textEnd))) return msg
  const tail = Buffer.from(type === 'P' ? [0, 0, 0] : [0]) // \0 (+ int16 0: no param types)
  const out = Buffer.concat([msg.subarray(0, 5), body.subarray(0, nameEnd), Buffer.from(REFUSAL), tail])
  out.writeInt32BE(out.length - 1, 1)
  return out
}

const server = new Server({ db, host: '127.0.0.1', port })
server.addEventListener('error', (e) => process.stderr.write(`pglite-socket: ${e.detail}\n`))
await server.start()
const bound = server.port // the real port when 0 was asked for
process.stdout.write(`READY port=${bound} url=postgres://postgres:postgres@127.0.0.1:${bound}/postgres\n`)

let stopping = false
async function shutdown() {
  if (stopping) return
  stopping = true
  // A stuck client must not keep us alive past the caller's patience.
  setTimeout(() => process.exit(0), 5000).unref()
  try {
    await server.stop()
    await db.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
