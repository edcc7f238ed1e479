/** Signals as the kernel sees them for a child process (Linux: /proc/PID/status). */
import { readFileSync } from 'node:fs';

/** True once `pid` catches SIGHUP (bit 0 of SigCgt): a handler is installed, its default action (exit) no longer applies. */
export function catchesSighup(pid: number | undefined): boolean {
  try {
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n;
  } catch {
    return false;
  }
}
