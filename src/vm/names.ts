// VM names: hostname-safe, unique, and a friendly random default.
import { randomInt } from 'node:crypto';
import { VmError } from './errors.ts';

const invalid = (message: string): VmError => new VmError('invalid', message);

export const VM_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,63}$/;

const ADJECTIVES = [
  'amber',
  'bold',
  'brave',
  'brisk',
  'calm',
  'clever',
  'cosmic',
  'crisp',
  'daring',
  'eager',
  'fair',
  'fancy',
  'gentle',
  'glad',
  'golden',
  'happy',
  'hazy',
  'jolly',
  'keen',
  'kind',
  'lively',
  'lucky',
  'merry',
  'mighty',
  'misty',
  'nimble',
  'noble',
  'plucky',
  'proud',
  'quick',
  'quiet',
  'rapid',
  'rosy',
  'rustic',
  'sandy',
  'shiny',
  'silent',
  'sleek',
  'snowy',
  'spry',
  'steady',
  'sunny',
  'swift',
  'tidy',
  'vivid',
  'warm',
  'wise',
  'zesty',
];
const ANIMALS = [
  'badger',
  'bison',
  'crane',
  'dingo',
  'eagle',
  'falcon',
  'ferret',
  'finch',
  'fox',
  'gecko',
  'heron',
  'ibis',
  'jackal',
  'koala',
  'lemur',
  'lynx',
  'marten',
  'mole',
  'moose',
  'newt',
  'ocelot',
  'orca',
  'otter',
  'owl',
  'panda',
  'puffin',
  'quail',
  'raven',
  'robin',
  'seal',
  'shrew',
  'sloth',
  'stoat',
  'swan',
  'tapir',
  'tern',
  'toucan',
  'trout',
  'vole',
  'walrus',
  'weasel',
  'wombat',
  'wren',
  'yak',
  'zebra',
];

export function validateVmName(name: string): string {
  if (!VM_NAME_PATTERN.test(name)) {
    throw invalid(
      `invalid VM name "${name}": use lower-case letters, digits and dashes (at most 64), starting with a letter or digit`,
    );
  }
  return name;
}

/** A free friendly name such as calm-otter (with a number when the plain ones run out). */
export function randomVmName(taken: (name: string) => boolean): string {
  for (let i = 0; i < 50; i++) {
    const n = `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${ANIMALS[randomInt(ANIMALS.length)]}`;
    if (!taken(n)) return n;
  }
  for (;;) {
    const n = `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${ANIMALS[randomInt(ANIMALS.length)]}-${randomInt(1000, 9999)}`;
    if (!taken(n)) return n;
  }
}
