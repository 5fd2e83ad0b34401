// The same types through require (CommonJS side).
import ak = require('attention-kernels');

const t: ak.Tensor = ak.Tensor.zeros([2, 3]);
const n: number = ak.getNumThreads();
export = { t, n };
