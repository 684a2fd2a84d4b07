export * from './exec.ts';
export * from './ipv4.ts';
export * from './links.ts';
export * from './names.ts';
export * from './nat.ts';
export * from './resolver.ts';
export { RecordingHostnet, type FakeOp } from './fake.ts';
