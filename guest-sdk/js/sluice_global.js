// The `sluice` global of a JavaScript guest: the host's log, and an error whose message is the
// batch's error as it is. guest-sdk/README.md is the guide.
//
//   sluice.log('info', 'starting');       // or sluice.info('starting')
//   throw new sluice.GuestError('bad');    // init/transform/mangle fail with exactly this text
//
// console.log writes to stdout and console.error to stderr; the host keeps both in the
// pipeline's guest log. A global rather than a module to import, so that the guest's file also
// loads under plain Node for its unit tests, where the test defines a stand-in `sluice`.
// sluice_app.js imports this module before the guest's, so `sluice` exists at its top level.

import { log as hostLog } from 'sluice:guest/host@0.1.0';

// The host's levels, by the names a guest may give them.
const LEVELS = { error: 'error', warn: 'warn', warning: 'warn', info: 'info', debug: 'debug' };

class GuestError extends Error {
  constructor(message) {
    super(message);
    this.name = 'GuestError';
  }
}

// Writes a line to the pipeline's guest log (`GET /v1/pipelines/{id}/logs`). The host cuts a
// line at 1 KiB and counts the lines past the batch's budget instead of keeping them.
function log(level, message) {
  const name = typeof level === 'string' ? LEVELS[level.toLowerCase()] : undefined;
  if (name === undefined) {
    throw new TypeError(
      `unknown log level ${JSON.stringify(level)}: use error, warn, info or debug`);
  }
  hostLog(name, String(message));
}

globalThis.sluice = Object.freeze({
  log,
  error: (message) => log('error', message),
  warn: (message) => log('warn', message),
  info: (message) => log('info', message),
  debug: (message) => log('debug', message),
  GuestError,
});
