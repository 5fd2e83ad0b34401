// Loads the addon the same way src/native.ts does (native/load.js), without
// TypeScript, for the test config and for worker-thread tests.
'use strict';
module.exports = require('../../native/load.js').loadAddon().binding;
