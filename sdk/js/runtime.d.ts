// The globals a processor has inside the component, beyond the language
// itself (lib es2022): what StarlingMonkey provides as ComponentizeJS 0.22
// builds it for tidewater (wasi:http and fetch-event disabled), and that a
// synchronous `process` call can use. TypeScript processors are type-checked
// with this file and without Node's types, so `Buffer`, `process.env` or
// `require` are type errors rather than a trap at the first event.
//
// Also present in the component, not declared here because a synchronous
// call cannot use them: timers (setTimeout, ...), queueMicrotask, fetch and
// its classes, streams, Blob, crypto.subtle. Absent: Buffer, process,
// require, navigator, Intl (its types come with lib es2022 but the
// component has none: `toLocaleString` falls back to plain formatting).
// Checked by printing `typeof` of each global from inside a component.

/** Console output goes to the host's log, one entry per line, rate-limited; `log` is the structured way. */
interface Console {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
  debug(...data: unknown[]): void;
  trace(...data: unknown[]): void;
  assert(condition?: boolean, ...data: unknown[]): void;
}
declare var console: Console;

interface TextEncoder {
  readonly encoding: string;
  encode(input?: string): Uint8Array;
  encodeInto(source: string, destination: Uint8Array): { read: number; written: number };
}
declare var TextEncoder: { prototype: TextEncoder; new (): TextEncoder };

interface TextDecoder {
  readonly encoding: string;
  readonly fatal: boolean;
  readonly ignoreBOM: boolean;
  decode(input?: ArrayBufferView | ArrayBuffer, options?: { stream?: boolean }): string;
}
declare var TextDecoder: {
  prototype: TextDecoder;
  new (label?: string, options?: { fatal?: boolean; ignoreBOM?: boolean }): TextDecoder;
};

interface URLSearchParams {
  append(name: string, value: string): void;
  delete(name: string): void;
  get(name: string): string | null;
  getAll(name: string): string[];
  has(name: string): boolean;
  set(name: string, value: string): void;
  sort(): void;
  toString(): string;
  forEach(callback: (value: string, key: string, parent: URLSearchParams) => void): void;
  [Symbol.iterator](): IterableIterator<[string, string]>;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
}
declare var URLSearchParams: {
  prototype: URLSearchParams;
  new (init?: string[][] | Record<string, string> | string | URLSearchParams): URLSearchParams;
};

interface URL {
  hash: string;
  host: string;
  hostname: string;
  href: string;
  readonly origin: string;
  password: string;
  pathname: string;
  port: string;
  protocol: string;
  search: string;
  readonly searchParams: URLSearchParams;
  username: string;
  toString(): string;
  toJSON(): string;
}
declare var URL: { prototype: URL; new (url: string | URL, base?: string | URL): URL };

/** Base64 of a string of code units up to U+00FF. */
declare function btoa(data: string): string;
/** The string of code units a base64 text stands for. */
declare function atob(data: string): string;
declare function structuredClone<T>(value: T): T;

interface Crypto {
  getRandomValues<T extends ArrayBufferView | null>(array: T): T;
  randomUUID(): `${string}-${string}-${string}-${string}-${string}`;
}
declare var crypto: Crypto;

interface Performance {
  /** Milliseconds since the instance started. */
  now(): number;
}
declare var performance: Performance;
