// Goal: an fsync of the device file that arrives while a flush (e.g. the daemon's timer flush) is uploading waits for it AND then runs a flush of its own, so a write acknowledged before the fsync is committed when fsync returns — the guarantee a live fork's fsync step relies on.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { BLOCK_SIZE, GlideFs, MemoryStore } from '../../glidefs/index.js';
import { mountDevice } from '../../mount/device.js';
import { blockOf } from '../glidefs/block-data.js';
import { kernelUnavailable } from './device-helpers.js';
import { GateStore } from '../glidefs/gate-store.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING DEVICE FLUSH-ORDER KERNEL TEST: ${skipReason}. It needs root and /dev/fuse. !!!\n`);


const until = async (what: string, cond: () => boolean) => {
  for (const end = Date.now() + 30_000; !cond(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
};

describe.skipIf(skipReason !== undefined)('device flush grouping', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-flush-order-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('fsync during a running flush returns only after a later flush committed the writes made before it', async () => {
    const dir = join(root, 'dev');
    mkdirSync(dir);
    const gate = new GateStore(new MemoryStore());
    const g = await GlideFs.open({ store: gate, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, 'cache') });
    let fsyncChild: ReturnType<typeof spawn> | undefined;
    try {
      gate.closed = false; // the volume's create record goes through
      await g.createVolume('v', 4 * BLOCK_SIZE);
      (gate.closed = true), (gate.arrived = 0);
      const vol = await g.openVolume('v');
      const m = await mountDevice(vol, dir, { log: () => undefined });
      try {
        // A write the device acknowledged, then a timer flush that stalls in its PUT.
        await vol.write(0, blockOf(1));
        const timerFlush = m.flushNow();
        await until('the timer flush to reach the store', () => gate.arrived === 1);
        // A second acknowledged write, made after that flush took its dirty set.
        await vol.write(BLOCK_SIZE, blockOf(2));
        // fsync from another process, on a read-only handle (its close is no flush).
        fsyncChild = spawn('python3', ['-c', 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.close(fd)', join(dir, 'volume')], {
          stdio: ['ignore', 'ignore', 'inherit'],
        });
        let exitCode: number | null | undefined;
        const exited = new Promise<number | null>((r) => fsyncChild!.once('exit', (c) => r((exitCode = c))));
        // While the first flush is held, the fsync cannot be done (a lack of waiting is seen here or below).
        await new Promise((r) => setTimeout(r, 300));
        expect(exitCode).toBeUndefined();
        gate.open();
        await timerFlush;
        expect(await exited).toBe(0);
        // When fsync returned, block 1 (written before it) was committed by a flush that started after it.
        const st = g.stats('v');
        expect(st.dirtyBlocks).toBe(0);
        expect(st.uploads).toBe(2);
        expect(m.flushes).toBe(2);
        expect((await vol.read(BLOCK_SIZE, BLOCK_SIZE)).equals(blockOf(2))).toBe(true);
      } finally {
        gate.open();
        await m.unmount({ lazy: true });
      }
    } finally {
      fsyncChild?.kill('SIGKILL');
      await g.close();
    }
  });
});
