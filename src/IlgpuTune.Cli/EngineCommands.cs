using System.Diagnostics;
using System.Reflection;
using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Model;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed class EngineCommands
{
    [Command("selftest", Description = "Load the embedded tiny Llama fixture, run forward and backward on the best device, and print the loss and the parity errors against transformers")]
    public int SelfTest([Option("device", Description = "cuda, cpu, ilgpu-cpu or auto (default: ILGPUTUNE_DEVICE, else auto)")] string? device = null)
    {
        string root = Path.Combine(Path.GetTempPath(), "ilgpu-tune-selftest-" + Environment.ProcessId);
        string dir = Path.Combine(root, "llama");
        try
        {
            ExtractFixture(dir);
            return RunParity([dir], device);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Command("parity", Description = "Run the transformers parity cases of fixture folders (tests/fixtures/tiny/<arch>) and print max abs/rel errors per tensor")]
    public int ParityCommand([Argument(Description = "fixture folders (config.json, model.safetensors, golden.safetensors, adapter/)")] string[] fixtures,
        [Option("device", Description = "cuda, cpu, ilgpu-cpu or auto")] string? device = null,
        [Option("bf16", Description = "bf16 tensor-core matmuls (ILGPU devices), with bf16 limits")] bool bf16 = false,
        [Option("qlora", Description = "QLoRA golden (tests/fixtures/qlora/qlora.safetensors): also run it on each fixture folder's model and adapter/, quantized to NF4")] string? qlora = null) =>
        RunParity(fixtures, device, bf16, qlora);

    private static int RunParity(string[] fixtures, string? deviceKind, bool bf16 = false, string? qloraGolden = null)
    {
        using var device = Device.Create(deviceKind);
        if (bf16) device.Precision = Precision.BF16;
        Console.WriteLine($"device: {device}");
        var all = new List<ParityRow>();
        foreach (var dir in fixtures)
        {
            var sw = Stopwatch.StartNew();
            var rows = Parity.Run(dir, device);
            if (qloraGolden is not null) rows.AddRange(Parity.RunQLora(dir, Path.Combine(dir, "adapter"), qloraGolden, device));
            all.AddRange(rows);
            Console.WriteLine($"{dir}: {rows.Count} tensors compared in {sw.Elapsed.TotalSeconds:F2} s");
        }
        Console.Write(Parity.Format(all));
        int failed = all.Count(r => !r.Pass);
        bool isGrad(ParityRow r) => r.Tensor.Contains("grad", StringComparison.Ordinal);
        Console.WriteLine($"matmuls: {device.Precision}; worst relative error: outputs {all.Where(r => !isGrad(r)).Max(r => r.Relative):E2}, " +
            $"gradients {all.Where(isGrad).DefaultIfEmpty().Max(r => r?.Relative ?? 0):E2}; " +
            $"peak device memory {device.Allocator.PeakAllocatedBytes / 1048576.0:F1} MiB");
        Console.WriteLine($"parity: {all.Count - failed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }

    private static void ExtractFixture(string dir)
    {
        var asm = Assembly.GetExecutingAssembly();
        const string prefix = "tiny/llama/";
        foreach (var name in asm.GetManifestResourceNames().Where(n => n.StartsWith(prefix, StringComparison.Ordinal)))
        {
            string path = Path.Combine(dir, name[prefix.Length..]);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var src = asm.GetManifestResourceStream(name)!;
            using var dst = File.Create(path);
            src.CopyTo(dst);
        }
        if (!File.Exists(Path.Combine(dir, "golden.safetensors")))
            throw new InvalidOperationException("the embedded tiny fixture is missing (build from a full clone)");
    }
}
