// Type declarations of tidewater.js, for processors written in TypeScript
// (plugins/ts/*, `tidewater new --lang ts`). The JavaScript SDK is the
// implementation; this file only describes it, so a TypeScript processor
// imports "tidewater.js" and gets these types:
//
//   import { defineProcessor, Invalid, type Event, type Output } from "./tidewater.js";
//
//   function onEvent(event: Event): Output[] {
//     if (event.value === null) throw new Invalid("tombstone");
//     return [{ key: event.key, value: event.value }];
//   }
//
//   export const { init, process } = defineProcessor({ process: onEvent });

/** One record read from an input topic (the WIT record `event`). */
export interface Event {
  /** The topic the record was read from. */
  readonly topic: string;
  /** The partition of that topic. */
  readonly partition: number;
  /** The record's offset in its partition (WIT u64: a BigInt, exact at any size; `Number(offset)` where a number is needed). */
  readonly offset: bigint;
  /** The record's timestamp, in milliseconds since the Unix epoch (UTC) (WIT s64: a BigInt; `new Date(Number(timestampMs))`). */
  readonly timestampMs: bigint;
  /** The record key; null when the record has none. */
  readonly key: Uint8Array | null;
  /** The record value; null is a tombstone, distinct from an empty value. */
  readonly value: Uint8Array | null;
  /** The headers in the order they were written; names may repeat. */
  readonly headers: ReadonlyArray<readonly [string, Uint8Array]>;
}

/** Bytes, or a string written as UTF-8. */
export type Bytes = Uint8Array | string;

/** One record to publish (the WIT record `output`). */
export interface Output {
  /** The value; null publishes a tombstone. */
  value: Bytes | null;
  /** The key; absent or null: no key. */
  key?: Bytes | null;
  /** The destination topic; absent or null: the processor's configured output. */
  topic?: string | null;
  /** Headers, published in this order (the host sets `idempotency-key`). */
  headers?: ReadonlyArray<readonly [string, Bytes]>;
}

/** The processor's config: the `config` table of its TOML section, as strings, sorted by key. */
export type Config = ReadonlyArray<readonly [string, string]>;

/** What the host does with an event that failed: the WIT variant `process-error`. */
export type ErrorKind = "transient" | "invalid" | "fatal";

/** Why one event could not be processed. Throw one of its subclasses. */
export class ProcessError extends Error {
  constructor(kind: ErrorKind, message: string);
  readonly kind: ErrorKind;
}
/** A passing failure: the host retries the event with backoff, then applies `on_error`. */
export class Transient extends ProcessError {
  constructor(message: string);
}
/** The event is bad: the host dead-letters it with this message. */
export class Invalid extends ProcessError {
  constructor(message: string);
}
/** The processor cannot go on: the host pauses it (others go on); nothing of the batch is committed. */
export class Fatal extends ProcessError {
  constructor(message: string);
}
/** Thrown by an init function to refuse the config; its message is the reason the host shows. */
export class ConfigError extends Error {}

/** Strict UTF-8 (TextEncoder/TextDecoder where the engine has them). */
export const utf8: {
  encode(s: string): Uint8Array;
  /** null when `b` is not valid UTF-8; a BOM is kept as U+FEFF. */
  decode(b: Uint8Array): string | null;
};

/**
 * Per-processor key-value state kept by the host: committed with the batch's
 * outputs and position, or not at all; reads see earlier writes of the batch.
 * Outside a component (unit tests under node) it is an in-memory map.
 */
export const state: {
  get(key: Bytes): Uint8Array | null;
  set(key: Bytes, value: Uint8Array): void;
  delete(key: Bytes): void;
  /** Empties the in-memory stand-in (unit tests only). */
  clear(): void;
};

/** Levelled logging into the host's log, tagged with the processor (rate-limited by the host). */
export const log: {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};

/** An output as the component returns it to the host (the lowered WIT record). */
export interface RawOutput {
  topic: string | null;
  key: Uint8Array | null;
  value: Uint8Array | null;
  headers: Array<[string, Uint8Array]>;
}

/** One event's result, as the WIT `result<list<output>, process-error>` is written in JavaScript. */
export type EventResult =
  | { tag: "ok"; val: RawOutput[] }
  | { tag: "err"; val: { tag: ErrorKind; val: string } };

/** The host side of state and log: what `install` connects (component.js does). */
export interface HostImports {
  state: {
    get(key: Uint8Array): Uint8Array | null | undefined;
    set(key: Uint8Array, value: Uint8Array): void;
    delete(key: Uint8Array): void;
  };
  log(level: "trace" | "debug" | "info" | "warn" | "error", message: string): void;
}

/** Connects state and log to the host (component.js calls it). */
export function install(host: HostImports): void;

/** A processor: one function per event, and an optional init that may refuse the config. */
export interface ProcessorDefinition {
  /** Called once per event, in order; throw Transient, Invalid or Fatal to fail the event. */
  process(event: Event): Output[];
  /** Called once per instance before any batch; throw ConfigError to refuse the config. */
  init?(config: Config): void;
}

/**
 * Turns one function per event (and an optional init) into the two exports of
 * the WIT world: `export const { init, process } = defineProcessor({...})`.
 * Any exception other than a ProcessError traps the component (as a panic in
 * Rust does): the host discards the instance and dead-letters the event.
 */
export function defineProcessor(p: ProcessorDefinition): {
  /** The WIT export `init`: throws the refusal message (a string). */
  init(config: Config): void;
  /** The WIT export `process`: one result per event, in order. */
  process(events: Event[]): EventResult[];
};
