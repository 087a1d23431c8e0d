/**
 * Child process of the crash model (test/engine/model/crash.ts): opens the engine on a real data
 * directory, runs a list of commands one after the other, and prints one line per event on fd 1
 * with a blocking write (a line that was printed reached the parent, even if a SIGKILL follows):
 *   {"s":i}                          command i started
 *   {"a":i,"j":sub,"ok":1,"rev":r}   command i (sub-op j of a burst / closeDuring) resolved
 *   {"a":i,"j":sub,"ok":0,"code":c}  ... failed with KvError code c
 *   {"raw":"..."}                    a non-KvError (a failure of the engine)
 * It kills itself with SIGKILL at the point the spec names: right after the k-th ack line
 * (`ack`), or at the n-th mutating FileIo call (`io`: before it, after it, or — for a write —
 * after writing only part of the bytes, a torn write). Usage: crash-child.ts <spec.json>
 */
import fs from 'node:fs';
import { open, KvError, nodeFileIo, type EngineOptions, type FileIo } from '../../../src/index.js';
import { keyOf, valueOf, type ChildSpec, type CCmd, type CSubOp } from './crash-spec.js';

const spec: ChildSpec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function out(o: unknown): void {
  fs.writeSync(1, JSON.stringify(o) + '\n');
}

function die(): never {
  process.kill(process.pid, 'SIGKILL');
  // not reached; SIGKILL is delivered at once
  for (;;) { /* wait for the signal */ }
}

let acks = 0;
function ack(i: number, j: number, r: { ok: true; rev: number | undefined } | { ok: false; err: unknown }): void {
  if (r.ok) out({ a: i, j, ok: 1, rev: r.rev ?? null });
  else if (r.err instanceof KvError) out({ a: i, j, ok: 0, code: r.err.code, msg: r.err.message });
  else {
    out({ raw: (r.err as Error)?.stack ?? String(r.err) });
    return;
  }
  acks++;
  if (spec.kill.mode === 'ack' && acks === spec.kill.k) {
    if (spec.kill.delayMs === 0) die();
    setTimeout(die, spec.kill.delayMs);
  }
}

// ---------------------------------------------------------------- the killing FileIo

let ioCalls = 0;
const MUTATING = ['write', 'writeSync', 'fsync', 'ftruncate', 'mkdir', 'unlink', 'rename', 'link', 'rm', 'fsyncDir'] as const;

function killingIo(): FileIo {
  const io: FileIo = { ...nodeFileIo };
  const kill = spec.kill;
  if (kill.mode !== 'io') return io;
  const hit = (): boolean => ++ioCalls === kill.n;
  for (const name of MUTATING) {
    const f = (nodeFileIo as unknown as Record<string, (...a: unknown[]) => unknown>)[name];
    if (name === 'writeSync') {
      io.writeSync = (fd, buf, off, len, pos) => {
        if (!hit()) return nodeFileIo.writeSync!(fd, buf, off, len, pos);
        if (kill.how === 'before') die();
        if (kill.how === 'torn' && len > 1) nodeFileIo.writeSync!(fd, buf, off, Math.max(1, Math.floor(len * kill.frac)), pos);
        else nodeFileIo.writeSync!(fd, buf, off, len, pos);
        die();
      };
      continue;
    }
    (io as unknown as Record<string, unknown>)[name] = async (...a: unknown[]) => {
      if (!hit()) return f(...a);
      if (kill.how === 'before') die();
      if (name === 'write' && kill.how === 'torn') {
        const [fd, buf, off, len, pos] = a as [number, Uint8Array, number, number, number];
        if (len > 1) await nodeFileIo.write(fd, buf, off, Math.max(1, Math.floor(len * kill.frac)), pos);
        die();
      }
      await f(...a);
      die();
    };
  }
  // open with a create flag is mutating too
  io.open = async (p, flags, mode) => {
    const creating = typeof flags === 'string' && /[wax]/.test(flags);
    if (!creating || !hit()) return nodeFileIo.open(p, flags, mode);
    if (kill.how === 'before') die();
    await nodeFileIo.open(p, flags, mode);
    die();
  };
  return io;
}

// ---------------------------------------------------------------- running

async function attempt<T>(fn: () => Promise<T>): Promise<{ ok: true; rev: T } | { ok: false; err: unknown }> {
  try {
    return { ok: true, rev: await fn() };
  } catch (err) {
    return { ok: false, err };
  }
}

function subOp(e: Awaited<ReturnType<typeof open>>, ns: string, o: CSubOp): Promise<number | undefined> {
  return o.t === 'put' ? e.put(ns, keyOf(o.key), valueOf(o.size, o.fill)) : e.delete(ns, keyOf(o.key));
}

async function main(): Promise<void> {
  const io = killingIo();
  const optsOf = (o: ChildSpec['opts']): EngineOptions => ({ ...o, io, onWarning: () => {} });
  let e = await open(spec.dir, optsOf(spec.opts));
  out({ opened: 1 });
  for (let i = 0; i < spec.cmds.length; i++) {
    const c: CCmd = spec.cmds[i];
    out({ s: i });
    switch (c.t) {
      case 'put': case 'del': {
        let ifRevision: number | undefined;
        if (c.cas !== 'none') {
          let cur = 0;
          try { cur = e.stat(c.ns, keyOf(c.key))?.revision ?? 0; } catch { /* no namespace */ }
          ifRevision = c.cas === 'zero' ? 0 : c.cas === 'current' ? cur : cur + 7;
          out({ cas: i, ifRevision, cur });
        }
        const opts = ifRevision === undefined ? undefined : { ifRevision };
        ack(i, 0, await attempt(() => (c.t === 'put' ? e.put(c.ns, keyOf(c.key), valueOf(c.size, c.fill), opts)
          : e.delete(c.ns, keyOf(c.key), opts))));
        break;
      }
      case 'batch':
        ack(i, 0, await attempt(() => e.batch(c.ns, c.ops.map((o) => (o.t === 'put'
          ? { type: 'put' as const, key: keyOf(o.key), value: valueOf(o.size, o.fill) } : { type: 'delete' as const, key: keyOf(o.key) })))));
        break;
      case 'burst':
        await Promise.all(c.ops.map((o, j) => attempt(() => subOp(e, c.ns, o)).then((r) => ack(i, j, r))));
        break;
      case 'create':
        ack(i, 0, await attempt(() => e.createNamespace(c.ns).then(() => undefined)));
        break;
      case 'drop':
        ack(i, 0, await attempt(() => e.dropNamespace(c.ns, { force: c.force }).then(() => undefined)));
        break;
      case 'reclaim':
        ack(i, 0, await attempt(() => e.reclaim().then(() => undefined)));
        break;
      case 'sync':
        ack(i, 0, await attempt(() => e.sync().then(() => undefined)));
        break;
      case 'gc':
        ack(i, 0, await attempt(() => e.gc().then(() => undefined)));
        break;
      case 'reopen':
        await e.close();
        e = await open(spec.dir, optsOf(c.opts));
        ack(i, 0, { ok: true, rev: undefined });
        break;
      case 'closeDuring': {
        const ps = c.ops.map((o, j) => attempt(() => subOp(e, c.ns, o)).then((r) => ack(i, j, r)));
        await new Promise((r) => setImmediate(r));
        const closed = e.close();
        await Promise.all(ps);
        await closed;
        e = await open(spec.dir, optsOf(spec.opts));
        out({ reopened: i });
        break;
      }
    }
  }
  out({ done: 1 });
  if (spec.kill.mode === 'ack') await new Promise((r) => setTimeout(r, 50)); // let a delayed kill land
  await e.close();
  out({ closed: 1 });
}

main().catch((err) => {
  out({ raw: (err as Error)?.stack ?? String(err), main: 1 });
  process.exit(3);
});
