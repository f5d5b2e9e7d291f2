// The entry module of a JavaScript guest: the exports of the `transformer` or `mangler` world
// (guest-sdk/wit/guest.wit) around the guest's own module, with batches in the JSON form
// (guest-sdk/ENCODING.md §4).
//
// `sluice guest build` stages this file, sluice_global.js, the guest's file (under its own
// name, so that stacks name it) and two generated modules, and hands them to componentize-js:
// sluice_world.js (`export const KIND = "transform"` or "mangle", `export const USER_FILE =
// "<the guest's file name>"`) and sluice_user.js (`export * from "./<the guest's file>"`).
// The guest's module exports
//
//   export function transform(flows, config) { return [{...}, ...]; }  // transformer
//   export function mangle(tag, records, config) { return [...]; }      // mangler
//
// and may export `init(config)`, called with the parsed config in each fresh instance (one per
// analyzer message) before its batches: throwing refuses the config, and a value other than
// undefined is what transform/mangle get as `config`.
//
// componentize-js runs the top level of this module and of the guest's at build time and keeps
// the initialised engine, so top-level code runs once, at build time, not per instance.

import './sluice_global.js';
import { KIND, USER_FILE } from './sluice_world.js';
import * as user from './sluice_user.js';

// The host keeps 512 bytes of a batch's error (README's security model); a longer text is cut
// here already, so that a huge message doesn't cross the boundary for nothing.
const MAX_ERR = 4096;

const SIGNATURE =
  KIND === 'transform' ? 'transform(flows, config)' : 'mangle(tag, records, config)';
// Checked at build time: a guest without its world's function doesn't build.
if (typeof user[KIND] !== 'function') {
  throw new Error(`a ${KIND} guest must export \`function ${SIGNATURE}\``);
}
if (user.init !== undefined && typeof user.init !== 'function') {
  throw new Error('`init` must be a function');
}

const UNSET = Symbol('unset');
let config = UNSET;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

// ` (at file:line in function)` for the innermost frame of the guest's file. SpiderMonkey
// writes a stack as one `function@file:line:column` per line.
function where(e) {
  const stack = e && typeof e.stack === 'string' ? e.stack : '';
  for (const line of stack.split('\n')) {
    const at = line.indexOf('@');
    if (at >= 0 && line.includes(USER_FILE)) {
      const fn = line.slice(0, at) || '<top>';
      const loc = line.slice(at + 1).replace(/^.*\//, '').replace(/:\d+$/, '');
      return ` (at ${loc} in ${fn})`;
    }
  }
  return '';
}

// The error text for an exception of the guest's code; the stack goes to stderr, that is to
// the guest log. componentize-js makes a thrown string the result's `err`, so every failure
// leaves these functions as a string.
function fail(what, e) {
  let text;
  if (e instanceof sluice.GuestError) {
    text = e.message;
  } else if (e instanceof Error) {
    text = `${what}: ${e.name}: ${e.message}${where(e)}`;
    if (e.stack) console.error(`${e.name}: ${e.message}\n${e.stack}`);
  } else {
    text = `${what}: ${String(e)}`;
  }
  if (text.length > MAX_ERR) text = text.slice(0, MAX_ERR - 3) + '...';
  return text;
}

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') &&
    typeof v.then === 'function';
}

function parse(bytes, what) {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (e) {
    throw `${what} is not valid JSON: ${e.message}`;
  }
}

// Calls the guest's transform/mangle. A generator's (or other iterable's) records are drained
// here, so that an exception thrown while producing them is reported like the function's own.
function call(fn, args) {
  try {
    let out = fn(...args);
    // Nothing runs the event loop between batches: a Promise would never settle.
    if (isThenable(out)) throw `${KIND} returned a Promise: it must be synchronous`;
    if (out === undefined || out === null) {
      throw `${KIND} returned ${out}: return an array of records (objects)`;
    }
    if (!Array.isArray(out)) {
      if (typeof out === 'string' || typeof out[Symbol.iterator] !== 'function') {
        throw `${KIND} returned a ${typeof out}: return an array of records (objects)`;
      }
      out = Array.from(out);
    }
    return out;
  } catch (e) {
    throw typeof e === 'string' ? e : fail(KIND, e);
  }
}

function encode(records) {
  for (let i = 0; i < records.length; i++) {
    const r = records[i];
    if (r === null || typeof r !== 'object' || Array.isArray(r)) {
      const got = r === null ? 'null' : Array.isArray(r) ? 'array' : typeof r;
      throw `${KIND} output: record ${i} is not an object (got ${got})`;
    }
  }
  let text;
  try {
    // Key order is insertion order (integer-like keys first, as JavaScript orders them).
    // NaN and infinities become null; a BigInt throws.
    text = JSON.stringify(records);
  } catch (e) {
    throw fail(`${KIND} output is not JSON`, e);
  }
  return encoder.encode(text);
}

export function init(text) {
  config = UNSET;
  let value;
  try {
    // An empty config counts as null, as the Rust SDK's Config does.
    value = text.trim() === '' ? null : JSON.parse(text);
  } catch (e) {
    throw `config is not valid JSON: ${e.message}`;
  }
  if (typeof user.init === 'function') {
    try {
      const replaced = user.init(value);
      if (isThenable(replaced)) throw 'init returned a Promise: it must be synchronous';
      if (replaced !== undefined) value = replaced;
    } catch (e) {
      throw typeof e === 'string' ? e : fail('init', e);
    }
  }
  config = value;
}

export function batchEncoding() {
  return 'json';
}

export function transform(batch) {
  if (config === UNSET) throw 'transform called before a successful init';
  return encode(call(user.transform, [parse(batch, 'flow batch'), config]));
}

export function mangle(tag, batch) {
  if (config === UNSET) throw 'mangle called before a successful init';
  return encode(call(user.mangle, [tag, parse(batch, 'record batch'), config]));
}
