// A strict TypeScript consumer of the package's types (ES module side).
import { MultiHeadAttention, Tensor, attention, cpuInfo, matmul, softmax, type CpuInfo } from 'attention-kernels';

const q: Tensor = Tensor.randn([1, 2, 4, 8], { seed: 1 });
const k = Tensor.randn([1, 2, 6, 8], { seed: 2 });
const scores: Tensor = matmul(q, k, { transposeB: true, alpha: 0.25 });
const probs = softmax(scores, { causal: true });
const { output, weights } = attention(q, k, k, { needWeights: true });
const mha = new MultiHeadAttention({ embedDim: 8, numHeads: 2 });
const forward: Promise<{ output: Tensor }> = mha.forwardAsync(Tensor.randn([1, 3, 8]));
const info: CpuInfo = cpuInfo();
const where: string = info.addon;
const shape: readonly number[] = probs.shape;

// @ts-expect-error: transposeB takes a boolean
matmul(q, k, { transposeB: 'yes' });
// @ts-expect-error: no such option
softmax(scores, { temperature: 2 });

export { output, weights, forward, where, shape };
