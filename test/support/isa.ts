// Tests of behaviour that does not depend on the kernel path (memory,
// threads, the event loop) run once: on the widest path this CPU has (the
// suite runs every file once per path, ATTN_ISA telling which).
import { cpuInfo } from '../../src';

const isas = cpuInfo().availableIsas;

/** True in the run on the widest kernel path (or when no path is forced). */
export const onWidestIsa = process.env.ATTN_ISA === undefined || process.env.ATTN_ISA === isas[isas.length - 1];
