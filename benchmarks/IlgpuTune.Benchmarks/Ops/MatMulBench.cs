using BenchmarkDotNet.Attributes;
using IlgpuTune.Kernels;

namespace IlgpuTune.Benchmarks.Ops;

/// <summary>The CPU path's matrix products at the shapes of a linear layer's forward (NT), dX (NN) and dW (TN).</summary>
[MemoryDiagnoser]
public class MatMulBench
{
    private float[] _a = [], _b = [], _c = [];

    [Params(256, 1024)]
    public int M { get; set; }

    [Params(256)]
    public int N { get; set; }

    [Params(256)]
    public int K { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var r = new Random(1);
        _a = Enumerable.Range(0, M * K).Select(_ => (float)r.NextDouble()).ToArray();
        _b = Enumerable.Range(0, N * K).Select(_ => (float)r.NextDouble()).ToArray();
        _c = new float[M * N];
    }

    [Benchmark] public void NT() => MatMul.NTCpu<float>(_a, _b, M, N, K, 1f, false, _c);

    [Benchmark] public void NN() => MatMul.NNCpu<float>(_a, _b, M, N, K, 1f, false, _c);

    [Benchmark] public void TN() => MatMul.TNCpu<float>(_a, _b, M, N, K, 1f, false, _c);
}
