// --egress on vm create, vm run and vm set: the policy text, checked here with the daemon's own
// parser so a typo is a usage error naming the flag before anything is created. And --secret of
// vm create and vm run, defined once here.
import { Flags } from '@oclif/core';
import { EgressRuleError, formatEgress, parseEgress } from '../egress/rules.ts';
import { flagError } from './vm-ref.ts';

export const EGRESS_SUMMARY =
  'Where the VM may connect: all, none, or allow=RULE[,RULE…] (default from config, all).';

export const EGRESS_DESCRIPTION = `A RULE is a domain (registry.npmjs.org), a wildcard (*.githubusercontent.com: any name below it, not the domain itself), an IPv4 address (10.1.2.3) or a CIDR (10.0.0.0/8), each optionally with :PORT. Separate rules with commas, no spaces; quote the value for the shell (the * and , are literal). Examples: --egress none; --egress 'allow=registry.npmjs.org:443,*.githubusercontent.com:443'; --egress allow=10.0.0.0/8:5432.

Enforced outside the guest, so root inside it cannot get around it. User-mode networking: only TCP, through banger's egress proxy at 10.0.2.100:3128 (the guest's HTTP_PROXY/HTTPS_PROXY point there; other TCP clients can use its CONNECT); no UDP, no DNS from the guest. Bridged networking: nftables on the host, names resolved through banger's resolver. See what was allowed and denied with: banger vm egress NAME. docs/egress.md has the details.`;

/** The flag, its value canonical (allow=a.com:443,…), or a usage error with the parser's words. */
export const egressFlag = Flags.custom<string>({
  helpValue: 'all|none|allow=RULE,…',
  parse: async (input) => {
    try {
      return formatEgress(parseEgress(input));
    } catch (err) {
      if (err instanceof EgressRuleError) throw flagError(`--egress: ${err.message}`);
      throw err;
    }
  },
});

/** --secret NAME@HOST[,HOST…] of vm create and vm run (repeatable). */
export const secretFlag = Flags.string({
  multiple: true,
  summary: 'A secret the VM may use: NAME@HOST[,HOST…] (banger secret set NAME first); repeatable.',
  description:
    'The guest gets an environment variable NAME holding a placeholder; banger’s egress proxy replaces it with the value in the headers of HTTPS requests to those hosts, and refuses requests that carry it anywhere else. The value never enters the VM (docs/egress.md).',
});
