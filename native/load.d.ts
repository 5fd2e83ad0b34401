// Types for native/load.js (plain JavaScript: the install script runs it
// before any TypeScript is compiled).

/** The package's root directory. */
export declare const root: string;

/** Where the loader looks, in order: `{ file }`, or `{ error }` when node-gyp-build found no binary. */
export declare function addonCandidates(env?: NodeJS.ProcessEnv): Array<{ file: string } | { error: string }>;

/** Loads the first candidate that loads; throws one error listing every failure and what to run. */
export declare function loadAddon(env?: NodeJS.ProcessEnv): { binding: unknown; file: string };

/** The package manager that installed the package, as far as can be told. */
export declare function packageManager(env?: NodeJS.ProcessEnv): { name: 'npm' | 'pnpm' | 'yarn' | 'bun'; major?: number } | null;

/** The prebuilt binaries in this copy of the package, e.g. `['linux-x64 (glibc)']`. */
export declare function prebuiltPlatforms(): string[];
