/**
 * Stable inode numbers for the KV mount: 32-bit FNV-1a (lib/hash.ts) of
 * `namespace NUL key` (fuse-native carries 32 bits). The same key always has
 * the same number, across remounts. 1 is the root; numbers 0 and 1 are never
 * produced. With 100,000 keys a collision is possible (about one expected):
 * files are reported with one link, so tools that pair files by inode (cp -a,
 * tar, du) only do so for nlink > 1 and are not misled.
 */
import { fnv1a } from '../lib/hash.js';

const NS_TAG = Buffer.from('ns:');
const NUL = Buffer.of(0);

function chain(...parts: Uint8Array[]): number {
  let h: number | undefined;
  for (const p of parts) h = fnv1a(p, 0, p.length, h);
  return h!;
}

export const ROOT_INODE = 1;

export function namespaceInode(ns: string): number {
  const h = chain(NS_TAG, Buffer.from(ns, 'utf8'));
  return h < 2 ? h + 2 : h;
}

export function keyInode(ns: string, key: Uint8Array): number {
  const h = chain(Buffer.from(ns, 'utf8'), NUL, key);
  return h < 2 ? h + 2 : h;
}
