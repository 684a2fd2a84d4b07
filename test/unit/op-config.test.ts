// The [logs] table of bangerd's config.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.ts';
import { DEFAULT_LOGS_CONFIG, parseLogsConfig } from '../../src/ops/config.ts';

describe('[logs] config', () => {
  it('defaults when absent; parsed inside bangerd config', () => {
    expect(parseLogsConfig(undefined)).toEqual(DEFAULT_LOGS_CONFIG);
    expect(parseConfig('').logs).toBeUndefined();
    const c = parseConfig(
      [
        '[logs]',
        'helper_file = "/var/log/banger/bangerd-root.log"',
        'daemon_unit = "bangerd.service"',
        'helper_unit = "bangerd-root.service"',
        'max_operations = 200',
        'max_age_days = 7',
      ].join('\n'),
    );
    expect(c.logs).toEqual({
      helper_file: '/var/log/banger/bangerd-root.log',
      daemon_unit: 'bangerd.service',
      helper_unit: 'bangerd-root.service',
      max_operations: 200,
      max_age_days: 7,
    });
  });

  it('refuses typos and bad values', () => {
    expect(() => parseConfig('[logs]\nhelper_fil = "/x"')).toThrow(/unknown key "logs.helper_fil"/);
    expect(() => parseConfig('[logs]\nhelper_file = "rel.log"')).toThrow(/absolute path/);
    expect(() => parseConfig('[logs]\ndaemon_unit = "bangerd; rm -rf /"')).toThrow(/systemd unit name/);
    expect(() => parseConfig('[logs]\nmax_operations = 0')).toThrow(/from 10 to/);
    expect(() => parseConfig('[logs]\nmax_age_days = -1')).toThrow(/positive number of days/);
    expect(() => parseConfig('logs = 3')).toThrow(/logs must be a table/);
  });
});
