import type { NativeBinding } from '../../src/native';
declare const native: NativeBinding;
export = native;
