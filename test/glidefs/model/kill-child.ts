/**
 * Child process of the kill -9 model test (test/glidefs/model-kill.test.ts).
 *
 * argv: <plan.json>. The plan names the store directory, catalog, cache dir,
 * the operations (run one after another) and `killAt`: the store request at
 * which this process sends itself SIGKILL (after the request reached the store
 * if `land`, else before it). Prints `ACK <i>` (synchronously) after operation
 * i completed and `DONE` at the end; an operation's error is printed as
 * `ERR <i> <code> <message>` and ends the process with exit code 3.
 */
import { readFileSync, writeSync } from 'node:fs';
import { DirStore, GlideFs, type ObjectStore, type Volume } from '../../../glidefs/index.js';
import { writeBytes, type KillPlan } from './kill-plan.js';

const MUTATING = new Set(['put', 'putIfAbsent', 'putIfMatch', 'delete']);
const REQUESTS = new Set(['put', 'putIfAbsent', 'putIfMatch', 'delete', 'get', 'getTagged', 'head', 'list']);

function killingStore(inner: ObjectStore, killAt: number, land: boolean): ObjectStore {
  let n = 0;
  const die = (): never => {
    writeSync(1, `KILLED at request ${n}\n`);
    process.kill(process.pid, 'SIGKILL');
    throw new Error('unreachable');
  };
  const base = inner as unknown as Record<string, unknown>;
  return new Proxy(inner, {
    get(_t, prop) {
      const v = base[prop as string];
      if (typeof v !== 'function') return v;
      const fn = (v as (...a: unknown[]) => unknown).bind(inner);
      if (typeof prop !== 'string' || !REQUESTS.has(prop)) return fn;
      if (prop === 'list') {
        return (prefix: string) => {
          if (++n === killAt) die();
          return fn(prefix);
        };
      }
      return async (...args: unknown[]) => {
        if (++n !== killAt) return fn(...args);
        if (land && MUTATING.has(prop)) await fn(...args);
        return die();
      };
    },
  });
}

async function main(): Promise<void> {
  const plan = JSON.parse(readFileSync(process.argv[2], 'utf8')) as KillPlan;
  const store = killingStore(new DirStore(plan.objects, { fsync: false }), plan.killAt, plan.land);
  const fs = await GlideFs.open({
    store,
    catalogPath: plan.catalog,
    cacheDir: plan.cache,
    checkpoint: { maxLogRecords: plan.maxLogRecords },
    leaseMs: 600_000, // no renewal during a run: the request count is the plan's
    gcGraceMs: 0,
  });
  const vols = new Map<string, Volume>();
  const vol = async (name: string) => {
    let v = vols.get(name);
    if (!v) {
      v = await fs.openVolume(name);
      vols.set(name, v);
    }
    return v;
  };
  for (let i = 0; i < plan.ops.length; i++) {
    const o = plan.ops[i];
    try {
      switch (o.t) {
        case 'create':
          await fs.createVolume(o.vol, o.blocks * 131072);
          break;
        case 'write':
          await (await vol(o.vol)).write(o.off, writeBytes(o.len, o.seed));
          break;
        case 'writes': {
          const v = await vol(o.vol);
          await Promise.all(o.ws.map((w) => v.write(w.off, writeBytes(w.len, w.seed))));
          break;
        }
        case 'flush':
          await (await vol(o.vol)).flush();
          break;
        case 'checkpoint':
          await (await vol(o.vol)).checkpoint();
          break;
        case 'fork':
          await (o.snapshot ? fs.snapshot(o.src, o.dst) : fs.fork(o.src, o.dst));
          break;
        case 'delete': {
          const v = vols.get(o.vol);
          vols.delete(o.vol);
          await v?.close();
          await fs.deleteVolume(o.vol);
          break;
        }
        case 'close': {
          const v = vols.get(o.vol);
          vols.delete(o.vol);
          await v?.close();
          break;
        }
      }
    } catch (err) {
      const e = err as Error & { code?: string };
      writeSync(1, `ERR ${i} ${e.code ?? e.name} ${e.message.replace(/\n/g, ' ')}\n`);
      process.exit(3);
    }
    writeSync(1, `ACK ${i}\n`);
  }
  for (const v of vols.values()) await v.close();
  await fs.close();
  writeSync(1, 'DONE\n');
}

void main().catch((err) => {
  writeSync(1, `FATAL ${(err as Error).stack?.replace(/\n/g, ' | ')}\n`);
  process.exit(4);
});
