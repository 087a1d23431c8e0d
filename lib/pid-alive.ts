/**
 * pidAlive: does a process with this pid exist on this machine?
 *
 * `kill(pid, 0)` answers "exists" (EPERM also means it exists, owned by
 * another user). A zombie — a process that has exited but whose parent has not
 * reaped it yet — exists for the kernel but holds nothing any more, so on Linux
 * it counts as dead (state `Z` in /proc/<pid>/stat). Where /proc is missing the
 * kill answer stands.
 *
 * A pid says nothing about other machines: callers that record a host beside
 * the pid must compare the host first.
 */
import { readFileSync } from 'node:fs';

export function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    // No /proc (not Linux): trust kill. /proc present but no entry: it just exited.
    return (err as NodeJS.ErrnoException).code !== 'ENOENT' || !procMounted();
  }
  // "<pid> (<comm>) <state> ...": comm may hold spaces and parentheses, so take the last ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

let procChecked: boolean | null = null;
function procMounted(): boolean {
  if (procChecked === null) {
    try {
      readFileSync('/proc/self/stat');
      procChecked = true;
    } catch {
      procChecked = false;
    }
  }
  return procChecked;
}
