using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(IlgpuTune.Benchmarks.Ops.MatMulBench).Assembly).Run(args);
