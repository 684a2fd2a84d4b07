// The smoke harness's command runner (test/smoke/harness.ts runCommand): its time limit must hold
// even when the command leaves a child holding its output open (`banger vm exec` and its ssh).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { descendants, jsonLines, runCommand } from '../smoke/harness.ts';

/** Running (a killed process may linger as a zombie until its new parent reaps it). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('smoke harness runCommand', () => {
  it('answers at its time limit although a child still holds stdout, and kills that child', async () => {
    const t0 = Date.now();
    // The child sleep inherits stdout; before the fix only sh was killed and the call waited
    // for sleep (30 s).
    const r = await runCommand('sh', ['-c', 'sleep 30 & echo "child $!"; wait'], { timeoutMs: 500 });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r.timedOut).toBe(true);
    expect(r.code).toBeNull();
    const child = Number(/child (\d+)/.exec(r.stdout)?.[1]);
    expect(child).toBeGreaterThan(0);
    // What was killed is said, the hung child among it.
    expect(r.killed).toContain(`${child}: sleep 30`);
    await new Promise((res) => setTimeout(res, 100));
    expect(alive(child)).toBe(false);
  });

  it('answers at its time limit when the command is gone but an orphan holds stdout', async () => {
    const t0 = Date.now();
    // sh exits at once; its background sleep (reparented, outside the tree) keeps the pipe.
    const r = await runCommand('sh', ['-c', 'sleep 30 & echo "orphan $!"'], { timeoutMs: 500 });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r.timedOut).toBe(true);
    expect(r.code).toBe(0);
    // The command had exited: its pid may be another process's by now, so nothing is killed.
    expect(r.killed).toEqual([]);
    const orphan = Number(/orphan (\d+)/.exec(r.stdout)?.[1]);
    if (orphan > 0) process.kill(orphan, 'SIGKILL');
  });

  it('a command within its limit: exit code and output, no timedOut', async () => {
    const r = await runCommand('sh', ['-c', 'echo out; echo err >&2; exit 3'], { timeoutMs: 5000 });
    expect(r).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
  });

  it('descendants finds children and grandchildren', async () => {
    // sh → sh → sleep: the inner sh runs two commands, so it forks sleep instead of exec'ing it.
    const p = spawn('sh', ['-c', 'sh -c "sleep 30; true" & wait'], { stdio: 'ignore' });
    try {
      let found: number[] = [];
      for (let i = 0; i < 50 && found.length < 2; i++) {
        await new Promise((res) => setTimeout(res, 50));
        found = descendants(p.pid!);
      }
      expect(found).toHaveLength(2);
      const comms = found.map((pid) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
      expect(comms).toEqual(['sh', 'sleep']);
    } finally {
      for (const pid of [p.pid!, ...descendants(p.pid!)]) process.kill(pid, 'SIGKILL');
    }
  });

  it('jsonLines reads whole records and leaves out a line still being written', () => {
    const dir = mkdtempSync(join(tmpdir(), 'smoke-harness-'));
    try {
      const f = join(dir, 'log');
      writeFileSync(f, '{"msg":"a"}\nnot json from stderr\n{"msg":"b"}\n{"msg":"hal');
      expect(jsonLines(f)).toEqual([{ msg: 'a' }, { msg: 'b' }]);
      expect(jsonLines(join(dir, 'none'))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
