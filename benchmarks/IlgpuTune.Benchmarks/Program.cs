using BenchmarkDotNet.Running;

if (args is ["fresh-tokenize", .. var rest]) return IlgpuTune.Benchmarks.Data.FreshTokenize.Run(rest);
if (args is ["prepare-dataset", .. var rest2]) return IlgpuTune.Benchmarks.Data.PrepareDataset.Run(rest2);
BenchmarkSwitcher.FromAssembly(typeof(IlgpuTune.Benchmarks.Ops.MatMulBench).Assembly).Run(args);
return 0;
