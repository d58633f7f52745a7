using BenchmarkDotNet.Running;

if (args is ["fresh-tokenize", .. var rest]) return IlgpuTune.Benchmarks.Data.FreshTokenize.Run(rest);
BenchmarkSwitcher.FromAssembly(typeof(IlgpuTune.Benchmarks.Ops.MatMulBench).Assembly).Run(args);
return 0;
