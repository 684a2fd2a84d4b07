// Which logs a trace reads: journald for a configured unit, else files; the helper's file from
// the start options, the config, or the helper itself (cached).
import { describe, expect, it } from 'vitest';
import { DEFAULT_LOGS_CONFIG } from '../../src/ops/config.ts';
import { LogSources } from '../../src/ops/sources.ts';

const cfg = DEFAULT_LOGS_CONFIG;

describe('LogSources', () => {
  it('files by default; the helper names its own log file, asked once per minute', async () => {
    let asked = 0;
    const s = new LogSources({
      cfg,
      daemonLogFile: '/s/bangerd.log',
      helperConfigured: true,
      askHelper: async () => {
        asked++;
        return '/var/log/banger/bangerd-root.log';
      },
    });
    const r = await s.resolve();
    expect(r.sources.map((x) => [x.source, x.where])).toEqual([
      ['daemon', '/s/bangerd.log'],
      ['helper', '/var/log/banger/bangerd-root.log'],
    ]);
    expect(r.notes).toEqual([]);
    await s.resolve();
    expect(asked).toBe(1);
  });

  it('the config wins over asking; journald units win over files', async () => {
    const s = new LogSources({
      cfg: { ...cfg, helper_file: '/etc-said.log', daemon_unit: 'bangerd.service' },
      daemonLogFile: '/s/bangerd.log',
      helperConfigured: true,
      askHelper: async () => '/helper-said.log',
    });
    expect((await s.resolve()).sources.map((x) => x.where)).toEqual([
      'journald unit bangerd.service',
      '/etc-said.log',
    ]);
    const j = new LogSources({
      cfg: { ...cfg, helper_unit: 'bangerd-root.service' },
      daemonLogFile: undefined,
      helperConfigured: true,
    });
    const r = await j.resolve();
    expect(r.sources.map((x) => x.where)).toEqual(['journald unit bangerd-root.service']);
    expect(r.notes[0]).toMatch(/daemon's lines are not shown/);
  });

  it("says so when the helper's log is unknown; no helper, no helper source and no note", async () => {
    const unknown = new LogSources({
      cfg,
      daemonLogFile: '/d.log',
      helperConfigured: true,
      askHelper: async () => undefined,
    });
    expect((await unknown.resolve()).notes).toEqual([
      expect.stringMatching(/root helper's lines are not shown/),
    ]);
    const unreachable = new LogSources({
      cfg,
      daemonLogFile: '/d.log',
      helperConfigured: true,
      askHelper: () => Promise.reject(new Error('ECONNREFUSED')),
    });
    expect((await unreachable.resolve()).sources).toHaveLength(1);
    const rootless = new LogSources({ cfg, daemonLogFile: '/d.log', helperConfigured: false });
    expect(await rootless.resolve()).toMatchObject({ notes: [] });
  });
});
