// `convert quantize`: an HF model folder -> the same model as transformers saves a bitsandbytes 4-bit model
// (formats.md §5.6): every decoder linear weight becomes <key> (packed U8), <key>.absmax, <key>.quant_map,
// <key>.nested_absmax, <key>.nested_quant_map and <key>.quant_state.bitsandbytes__nf4|fp4; embeddings, norms, biases and
// the head keep their stored dtype; config.json gets quantization_config. Loads with ModelLoader (and with transformers
// when bitsandbytes is installed). Each linear is quantized once, in two streamed stages (the safetensors header needs every
// quant_state's JSON length, which depends on the data, before the first byte): (1) the linears are read and quantized on
// all cores ahead of a writer that appends their packed bytes to a spill file in the output's temp folder, keeping the
// small parts (absmax codes, maps, JSON: ~1/64 of the packed size); (2) the shards are written, packed bytes read back
// from the spill (just written: usually still in the page cache), the other tensors copied from the input. In flight in
// either stage: at most BudgetBytes (one tensor over it runs alone), plus the small parts, plus the buffers kept for reuse
// (BufferPool: at most BudgetBytes of fp32 copies and as much of packed bytes).
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public static class QuantizedExport
{
    /// <summary>Writes <paramref name="outDir"/> atomically; returns the weight files written.</summary>
    public static IReadOnlyList<string> Run(string baseDir, string outDir, long maxShardBytes, string quantType = "nf4", bool doubleQuant = true)
    {
        if (quantType is not ("nf4" or "fp4")) throw new ArgumentException($"quant type '{quantType}': expected nf4 or fp4");
        string target = Path.GetFullPath(outDir);
        if (HfFiles.IsSameOrInside(baseDir, target))
            throw new ArgumentException($"output folder {target} would replace the input {Path.GetFullPath(baseDir)}", nameof(outDir));
        var model = ModelConfig.Load(baseDir);
        var config = HfFiles.ReadConfigJson(baseDir);
        if (config["quantization_config"] is not null)
            throw new InvalidDataException($"{Path.Combine(baseDir, "config.json")}: the model is already quantized (quantization_config)");
        using var weights = WeightSource.Open(baseDir);
        var expected = CausalLM.ExpectedWeights(model);
        // Every tensor the config implies must be there with its shape before anything is written: a config.json that
        // disagrees with its weights (hidden_size, vocab_size...) fails here, with no output folder.
        foreach (var (name, shape) in expected)
        {
            if (!weights.Contains(name)) throw new InvalidDataException($"{weights.Path}: missing tensor '{name}' (config.json implies it)");
            var actual = weights.Shape(name);
            if (!actual.SequenceEqual(shape.Select(d => (long)d)))
                throw new InvalidDataException($"{weights.Path}: tensor '{name}' has shape [{string.Join(", ", actual)}], " +
                    $"but config.json implies [{string.Join(", ", shape)}]");
        }
        var linear = expected
            .Where(e => CausalLM.IsDecoderLinear(model, e.Name, e.Shape)).Select(e => e.Name).ToHashSet(StringComparer.Ordinal);

        // Stage 1: every linear quantized once; packed bytes to the spill file, in input order; the small parts kept.
        var small = new ConcurrentDictionary<string, ReadOnlyMemory<byte>>(StringComparer.Ordinal);
        var specs = new List<TensorSpec>();
        var specOf = new ConcurrentDictionary<string, IReadOnlyList<TensorSpec>>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var name in weights.Names)
        {
            if (linear.Contains(name))
            {
                order.Add(name);
                continue;
            }
            string stored = weights.DTypeOf(name);
            _ = DTypeInfo.FromSafetensorsName(stored)
                ?? throw new InvalidDataException($"{weights.Path}: tensor '{name}' has dtype {stored}, which cannot be copied");
        }
        IReadOnlyList<string>? files = null;
        // Reused between linears of the same size: the fp32 copy, the packed bytes (once in the spill).
        var floats = new BufferPool<float>(BudgetBytes);
        var packedPool = new BufferPool<byte>(BudgetBytes);
        AtomicDirectory.Write(target, tmp =>
        {
            string spillPath = Path.Combine(tmp, "packed.spill");
            var packedAt = new Dictionary<string, (long Offset, int Length)>(StringComparer.Ordinal);
            try
            {
                using (var spill = new FileStream(spillPath, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 20))
                using (var quantized = new OrderedPipeline<string>(order, name =>
                       {
                           var parts = Bnb4Bit.Tensors(name, Quantize(weights, name, quantType, doubleQuant, floats, packedPool));
                           specOf[name] = [.. parts.Select(t => new TensorSpec(t.Name, t.DType, t.Shape))];
                           foreach (var t in parts.Where(t => t.Name != name)) small[t.Name] = t.Data;
                           return parts.Single(t => t.Name == name).Data;
                       }, name => QuantizeCost(weights, name), BudgetBytes, Environment.ProcessorCount))
                {
                    for (int i = 0; i < order.Count; i++)
                    {
                        var packed = quantized.Take(i);
                        packedAt[order[i]] = (spill.Position, packed.Length);
                        spill.Write(packed.Span);
                        if (MemoryMarshal.TryGetArray(packed, out var segment)) packedPool.Return(segment.Array!);
                    }
                }
                floats.Clear();
                foreach (var name in weights.Names)
                {
                    if (specOf.TryGetValue(name, out var parts)) specs.AddRange(parts);
                    else specs.Add(new TensorSpec(name, DTypeInfo.FromSafetensorsName(weights.DTypeOf(name))!.Value, weights.Shape(name)));
                }
                // Stage 2: the shards; packed bytes back from the spill, small parts from memory, the rest from the input.
                using var spillRead = File.OpenHandle(spillPath);
                var readBack = new ConcurrentDictionary<string, byte[]>(StringComparer.Ordinal);
                files = SafetensorsWriter.WriteShardedParallel(tmp, "model", specs, maxShardBytes, spec =>
                {
                    if (small.TryRemove(spec.Name, out var part)) return part;
                    if (!packedAt.TryGetValue(spec.Name, out var at)) return weights.ReadBytes(spec.Name);
                    var bytes = readBack[spec.Name] = packedPool.Rent(at.Length);
                    for (int done = 0; done < bytes.Length;)
                        done += RandomAccess.Read(spillRead, bytes.AsSpan(done), at.Offset + done) is > 0 and var got ? got
                            : throw new EndOfStreamException($"{spillPath}: ends inside '{spec.Name}'");
                    return bytes;
                }, new WritePipeline(BudgetBytes, Environment.ProcessorCount, Written: spec =>
                {
                    if (readBack.TryRemove(spec.Name, out var bytes)) packedPool.Return(bytes);
                }));
            }
            finally
            {
                File.Delete(spillPath);
            }
            config["quantization_config"] = Bnb4Bit.QuantizationConfig(quantType, doubleQuant, HfFiles.TorchName(model.TorchDtype ?? DType.BF16));
            AtomicFile.WriteAllText(Path.Combine(tmp, "config.json"), config.ToJsonString(new() { WriteIndented = true }) + "\n");
            HfFiles.CopyAuxiliary(baseDir, tmp);
        });
        return files!;
    }

    /// <summary>The most memory the tensors being quantized or written may hold at once (see the file head).</summary>
    public const long BudgetBytes = 1L << 30;

    // Held while a linear is quantized: its fp32 copy, the packed bytes and the absmax.
    private static long QuantizeCost(IWeightSource weights, string name)
    {
        long n = weights.Shape(name).Aggregate(1L, (a, d) => a * d);
        return 4 * n + (n + 1) / 2 + n / 16;
    }

    // Bnb4Bit.Quantize with the blocks spread over all cores (each block is quantized alone, so the bytes are the same);
    // the double quantization (1/64 of the work, with a sequential mean) stays as it is.
    private static Bnb4BitWeight Quantize(IWeightSource weights, string name, string quantType, bool doubleQuant,
        BufferPool<float> floats, BufferPool<byte> packedPool)
    {
        string dtype = weights.DTypeOf(name) switch { "BF16" => "bfloat16", "F16" => "float16", _ => "float32" };
        var shape = weights.Shape(name).Select(d => (int)d).ToArray();
        var x = floats.Rent(shape.Aggregate(1L, (a, d) => a * d));
        weights.ReadFloat32(name, x);
        var type = quantType == "nf4" ? QuantType.Nf4 : QuantType.Fp4;
        const int blockSize = Nf4Codec.BlockSize, blocksPerChunk = 4096;
        var packed = packedPool.Rent((x.Length + 1L) / 2);
        var absmax = new float[Nf4Codec.Blocks(x.Length, blockSize)];
        Parallel.For(0, (absmax.Length + blocksPerChunk - 1) / blocksPerChunk, c =>
        {
            int first = c * blocksPerChunk, count = Math.Min(blocksPerChunk, absmax.Length - first);
            int start = first * blockSize, length = Math.Min(count * blockSize, x.Length - start);
            if (type == QuantType.Nf4) Nf4Blocks.Quantize(x.AsSpan(start, length), packed.AsSpan(start / 2, (length + 1) / 2), absmax.AsSpan(first, count));
            else Nf4Codec.QuantizeCpu(x.AsSpan(start, length), blockSize, type, packed.AsSpan(start / 2, (length + 1) / 2), absmax.AsSpan(first, count));
        });
        floats.Return(x);
        var map = Nf4Codec.Code(type);
        map[8] = Math.Abs(map[8]); // bnb's Python table: +0.0 (as Bnb4Bit.Quantize)
        if (!doubleQuant) return new Bnb4BitWeight(quantType, blockSize, dtype, shape, packed, null, absmax, map, null, null, 0, 0f);
        var dyn = Nf4Codec.DynamicMap();
        var qabsmax = new byte[absmax.Length];
        var absmax2 = new float[Nf4Codec.Blocks(absmax.Length, Nf4Codec.NestedBlockSize)];
        float offset = Nf4Codec.DoubleQuantizeCpu(absmax, dyn, qabsmax, absmax2);
        return new Bnb4BitWeight(quantType, blockSize, dtype, shape, packed, qabsmax, null, map, absmax2, dyn, Nf4Codec.NestedBlockSize, offset);
    }
}
