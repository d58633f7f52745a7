using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public static class ModelLoader
{
    /// <summary>Loads config.json + weights from an HF model folder: model.safetensors (or its index) as transformers
    /// prefers, else pytorch_model.bin (or its index). Weights are float32, except that the decoder layers' linear weights
    /// (and the embedding and head) are stored as <paramref name="linearDtype"/> (BF16/F16: a frozen base for 16-bit tensor-core matmuls, half the memory),
    /// or quantized to 4 bits on load with <paramref name="quantization"/> (QLoRA; see CausalLM.FromWeights). A folder saved
    /// by transformers from a bitsandbytes 4-bit model (config.json quantization_config, formats.md §5.6) loads its stored
    /// NF4/FP4 weights as they are, whatever <paramref name="quantization"/> says.
    /// <paramref name="frozenAsStored"/> (inference, a LoRA base): where the device's fp32 products widen 16-bit weights
    /// themselves (the managed CPU path), the matrices stored in BF16/F16 stay so, as views of the memory-mapped safetensors
    /// (no copy: a bf16 model takes its file size, in reclaimable page cache). Full fine-tuning needs fp32 masters: leave it off.
    /// <paramref name="embeddingOnHost"/> (a frozen embedding, untied head): the input embedding stays in host memory in
    /// linearDtype (a view of the mapped file where it is stored so) and each lookup uploads the batch's rows.</summary>
    public static CausalLM Load(string directory, Device device, DType linearDtype = DType.F32, QuantType? quantization = null,
        bool frozenAsStored = false, bool embeddingOnHost = false)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder {directory} does not exist");
        var config = ModelConfig.Load(directory);
        using var weights = WeightSource.Open(directory);
        Func<string, int[], Tensor?>? stored = frozenAsStored && device.Caps.WidensHalfWeights
            ? (name, shape) => AsStored(weights, device, name, shape)
            : null;
        try
        {
            var layout = Bnb4Bit.Layout(weights, Path.Combine(directory, "config.json"));
            // The host device of an offloaded embedding: the model's from here on (FromWeights disposes it if it throws).
            var host = embeddingOnHost ? Device.Create("cpu") : null;
            Func<string, int[], Tensor?>? onHost = host is null ? null : (name, shape) => AsStored(weights, host, name, shape);
            if (layout.QuantizedWeights.Count == 0)
                return CausalLM.FromWeights(config, device, weights.Names,
                    name => weights.Contains(name) ? weights.Shape(name) : null,
                    weights.ReadFloat32, directory, linearDtype, quantization, readStored: stored, embeddingHost: host, readOnHost: onHost);

            var quantized = layout.QuantizedWeights.ToHashSet(StringComparer.Ordinal);
            return CausalLM.FromWeights(config, device, layout.PlainTensors.Concat(layout.QuantizedWeights),
                name => quantized.Contains(name) ? Bnb4Bit.Shape(weights, name).Select(d => (long)d).ToArray()
                    : weights.Contains(name) ? weights.Shape(name) : null,
                weights.ReadFloat32, directory, linearDtype, quantization,
                name => quantized.Contains(name) ? FromBnb(device, name, Bnb4Bit.Read(weights, name)) : null, stored, host, onHost);
        }
        catch (OutOfMemoryException e) when (e is not InsufficientMemoryException)
        {
            throw OutOfMemory(directory, weights, stored is not null, linearDtype, e);
        }
    }

    // A BF16/F16 matrix as stored: a view of the mapped file where the source maps it, else one copy of its bytes.
    private static Tensor? AsStored(IWeightSource weights, Device device, string name, int[] shape)
    {
        DType? dtype = weights.DTypeOf(name) switch { "BF16" => DType.BF16, "F16" => DType.F16, _ => null };
        if (dtype is not { } dt) return null;
        return weights.ShareBytes(name) is { } mapped
            ? Tensor.ViewHost(device, dt, mapped, shape)
            : Tensor.FromBytes(device, dt, weights.ReadBytes(name), shape);
    }

    // What the weights need as loaded (fp32 unless kept 16-bit) against the memory available, for the one error line.
    private static InsufficientMemoryException OutOfMemory(string directory, IWeightSource weights, bool keepsStored, DType linearDtype,
        OutOfMemoryException inner)
    {
        long needed = 0;
        bool quantized = false;
        foreach (var name in weights.Names)
        {
            long elements = weights.Shape(name).Aggregate(1L, (a, d) => a * d);
            string dtype = weights.DTypeOf(name);
            bool matrix = weights.Shape(name).Length == 2;
            quantized |= dtype == "U8";
            needed += elements * (dtype is "U8" or "I8" or "BOOL" ? 1
                : matrix && (linearDtype != DType.F32 || keepsStored && dtype is "BF16" or "F16") ? 2 : 4);
        }
        return new InsufficientMemoryException(
            $"out of memory loading {directory}: its weights need about {Gib(needed)} as loaded, and {Gib(AvailableMemory())} of " +
            "memory is available; free memory" + (quantized ? "" : ", or load it quantized (chat --bits 4, quantization: nf4)"), inner);
    }

    /// <summary>Memory this process can have now: Linux's MemAvailable, within the GC's limit (a container's, or
    /// DOTNET_GCHeapHardLimit).</summary>
    internal static long AvailableMemory()
    {
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                    return Math.Min(limit, long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return limit;
    }

    private static string Gib(long bytes) => $"{bytes / (double)(1L << 30):F1} GiB";

    private static Nf4Weight FromBnb(Device device, string name, Bnb4BitWeight w) =>
        Nf4Weight.FromQuantized(device, w.Shape, w.BlockSize, w.Type, w.Packed, w.QuantMap, w.Absmax, w.QAbsmax, w.NestedAbsmax,
            w.NestedQuantMap, w.NestedOffset, name);
}
