// The package from an ES module: named imports, the prebuilt binary, a forward pass.
import { MultiHeadAttention, Tensor, cpuInfo, matmul } from 'attention-kernels';

const c = matmul(Tensor.randn([3, 4], { seed: 1 }), Tensor.randn([4, 5], { seed: 2 }));
const { output } = new MultiHeadAttention({ embedDim: 32, numHeads: 4, seed: 1 }).forward(Tensor.randn([1, 6, 32], { seed: 3 }));
const addon = cpuInfo().addon;
if (!addon.includes(`/prebuilds/${process.platform}-${process.arch}/`) || c.shape.join() !== '3,5' || output.shape.join() !== '1,6,32') {
  console.error('unexpected:', addon, c.shape, output.shape);
  process.exit(1);
}
console.log(JSON.stringify({ esm: true, addon, matmul: c.shape, forward: output.shape }));
