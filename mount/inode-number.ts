/**
 * Stable inode numbers for the KV mount: 32-bit FNV-1a of `namespace NUL key`
 * (fuse-native carries 32 bits). The same key always has the same number,
 * across remounts. 1 is the root; numbers 0 and 1 are never produced.
 * With 100,000 keys a collision is possible (about one expected): files are
 * reported with one link, so tools that pair files by inode (cp -a, tar, du)
 * only do so for nlink > 1 and are not misled.
 */
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function fnv(h: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, FNV_PRIME) >>> 0;
  }
  return h;
}

export const ROOT_INODE = 1;

export function namespaceInode(ns: string): number {
  const h = fnv(fnv(FNV_OFFSET, Buffer.from('ns:')), Buffer.from(ns, 'utf8'));
  return h < 2 ? h + 2 : h;
}

export function keyInode(ns: string, key: Uint8Array): number {
  const h = fnv(fnv(fnv(FNV_OFFSET, Buffer.from(ns, 'utf8')), Buffer.of(0)), key);
  return h < 2 ? h + 2 : h;
}
