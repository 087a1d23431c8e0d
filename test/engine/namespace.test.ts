// createNamespace(x) while dropNamespace(x) is under way (issue 9 item 6): the create waits for
// the drop; afterwards the new namespace and its acknowledged writes are durable.
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { nodeFileIo, open, type FileIo } from '../../src/index.js';
import { rmDir, segFiles, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

it('create of a namespace being dropped waits for the drop; its writes are durable', async () => {
  const dir = tmpDir('ns-race');
  dirs.push(dir);
  // the drop stops right before it moves the namespace's directory into trash/ (the race window,
  // held open; the namespace is still listed: a drop that fails changes nothing)
  const atRename = deferred();
  const release = deferred();
  let gated = false;
  const io: FileIo = {
    ...nodeFileIo,
    rename: async (from, to) => {
      if (gated && to.includes(`${path.sep}trash${path.sep}`)) {
        atRename.resolve();
        await release.promise;
      }
      return nodeFileIo.rename(from, to);
    },
  };
  const e = await open(dir, { io, sync: 'always' });
  await e.createNamespace('x');
  await e.put('x', 'old', 'from before the drop');
  gated = true;
  const drop = e.dropNamespace('x', { force: true });
  await atRename.promise;
  let created = false;
  const create = e.createNamespace('x').then(() => (created = true));
  await new Promise((r) => setTimeout(r, 100));
  expect(created).toBe(false); // waiting for the drop, not racing it
  release.resolve();
  await drop;
  await create;
  expect(e.listNamespaces()).toContain('x');
  const rev = await e.put('x', 'k', 'acknowledged');
  expect((await e.get('x', 'k'))?.value.toString()).toBe('acknowledged');
  expect(await e.get('x', 'old')).toBeUndefined();
  expect(segFiles(dir, 'x').length).toBeGreaterThan(0);
  await e.close();
  const e2 = await open(dir);
  expect(e2.listNamespaces()).toContain('x');
  expect(await e2.get('x', 'k')).toMatchObject({ revision: rev });
  expect((await e2.get('x', 'k'))?.value.toString()).toBe('acknowledged');
  expect(e2.list('x').map((r) => r.key.toString())).toEqual(['k']);
  await e2.close();
});

it('many creates and drops of one name, interleaved with puts: every acknowledged put of the last incarnation survives', async () => {
  const dir = tmpDir('ns-churn');
  dirs.push(dir);
  const e = await open(dir, { sync: 'always' });
  await e.createNamespace('y');
  for (let round = 0; round < 20; round++) {
    const drop = e.dropNamespace('y', { force: true });
    const create = e.createNamespace('y'); // fails (exists) or waits for the drop: never both gone and listed
    const [d, c] = await Promise.allSettled([drop, create]);
    expect(d.status).toBe('fulfilled');
    if (c.status === 'rejected') {
      expect((c.reason as { code?: string }).code).toBe('E_NAMESPACE_EXISTS');
      await e.createNamespace('y');
    }
    await e.put('y', 'k', `round ${round}`);
    expect((await e.get('y', 'k'))?.value.toString()).toBe(`round ${round}`);
  }
  await e.close();
  const e2 = await open(dir);
  expect((await e2.get('y', 'k'))?.value.toString()).toBe('round 19');
  await e2.close();
});

it('a drop that failed midway (its directory not moved) changes nothing; dropped again and created, the old keys never come back', async () => {
  const dir = tmpDir('ns-failed-drop');
  dirs.push(dir);
  let failMove = false;
  const io: FileIo = {
    ...nodeFileIo,
    rename: async (from, to) => {
      if (failMove && to.includes(`${path.sep}trash${path.sep}`) && from.endsWith(`${path.sep}z`)) {
        throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
      }
      return nodeFileIo.rename(from, to);
    },
  };
  const e = await open(dir, { io, sync: 'always' });
  await e.createNamespace('z');
  await e.put('z', 'old', 'from before the drop');
  failMove = true;
  const err = await e.dropNamespace('z', { force: true }).then(() => null, (x: unknown) => x);
  expect((err as { code?: string })?.code).toBe('E_IO');
  failMove = false;
  // the failed drop changed nothing (engmodel, s4): the namespace is there with its keys
  expect(e.listNamespaces()).toContain('z');
  expect((await e.get('z', 'old'))?.value.toString()).toBe('from before the drop');
  expect((await e.createNamespace('z').then(() => null, (x: { code?: string }) => x))?.code).toBe('E_NAMESPACE_EXISTS');
  await e.dropNamespace('z', { force: true });
  await e.createNamespace('z');
  await e.put('z', 'new', 'after');
  expect(e.list('z').map((r) => r.key.toString())).toEqual(['new']);
  await e.close();
  const e2 = await open(dir);
  expect(e2.list('z').map((r) => r.key.toString())).toEqual(['new']);
  expect(await e2.get('z', 'old')).toBeUndefined();
  await e2.close();
});
