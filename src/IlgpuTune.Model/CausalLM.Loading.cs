// Loading: a CausalLM from any weight source (safetensors, torch .bin, bnb 4-bit, random init), checked against the
// weight schema key by key and shape by shape before anything is allocated.
using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed partial class CausalLM
{
    /// <summary>
    /// Builds the model from a weight source, checking every key and shape: a missing, unexpected or mis-shaped tensor is an
    /// error naming the key. <paramref name="shapeOf"/> returns null for an absent key; <paramref name="read"/> returns float32 data.
    /// <paramref name="quantization"/> (QLoRA): the decoder layers' linear weights are quantized to 4 bits (bnb defaults:
    /// blocks of 64, double quantization) one at a time as they are read, so neither the host nor the device ever holds
    /// the dense model; embeddings, norms, biases and the head stay fp32 (as transformers leaves them, formats.md §5.5).
    /// <paramref name="readQuantized"/> returns a weight already stored in 4 bits (a bitsandbytes checkpoint), null for a dense one.
    /// <paramref name="readStored"/> returns a matrix as stored (a frozen BF16/F16 tensor, e.g. viewing the mapped file) where
    /// the device multiplies it so, null to read it as float32.
    /// <paramref name="embeddingHost"/> (a managed CPU device, which the model owns from here on, also when this throws): the
    /// frozen input embedding is kept there in linearDtype instead of on <paramref name="device"/> (offload_embeddings; an
    /// untied head only); <paramref name="readOnHost"/> returns its stored bytes viewed on that device, null to encode it.
    /// </summary>
    public static CausalLM FromWeights(ModelConfig config, Device device, IEnumerable<string> availableKeys,
        Func<string, long[]?> shapeOf, Func<string, float[]> read, string source, DType linearDtype = DType.F32,
        QuantType? quantization = null, Func<string, Nf4Weight?>? readQuantized = null, Func<string, int[], Tensor?>? readStored = null,
        Device? embeddingHost = null, Func<string, int[], Tensor?>? readOnHost = null)
    {
        try
        {
            return Build(config, device, availableKeys, shapeOf, read, source, linearDtype, quantization, readQuantized, readStored,
                embeddingHost, readOnHost);
        }
        catch
        {
            embeddingHost?.Dispose();
            throw;
        }
    }

    private static CausalLM Build(ModelConfig config, Device device, IEnumerable<string> availableKeys,
        Func<string, long[]?> shapeOf, Func<string, float[]> read, string source, DType linearDtype,
        QuantType? quantization, Func<string, Nf4Weight?>? readQuantized, Func<string, int[], Tensor?>? readStored,
        Device? embeddingHost, Func<string, int[], Tensor?>? readOnHost)
    {
        if (linearDtype is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"linear weights are stored as F32, BF16 or F16, not {linearDtype}");
        if (embeddingHost is not null && config.TieWordEmbeddings)
            throw new ArgumentException($"{source}: the embedding cannot be kept on the host: tie_word_embeddings makes it the output head too");
        var expected = ExpectedWeights(config);
        var expectedNames = expected.Select(e => e.Name).ToHashSet();
        var available = availableKeys.ToHashSet();
        var missing = expected.Where(e => !available.Contains(e.Name)).Select(e => e.Name).ToList();
        var unexpected = available.Where(k => !expectedNames.Contains(k) && !IsIgnorable(k, config)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InvalidDataException($"{source}: weights do not match {config.Architecture} config" +
                (missing.Count > 0 ? $"; missing: {Summarize(missing)}" : "") +
                (unexpected.Count > 0 ? $"; unexpected: {Summarize(unexpected)}" : ""));
        foreach (var (name, shape) in expected)
        {
            var actual = shapeOf(name)!;
            if (!actual.SequenceEqual(shape.Select(d => (long)d)))
                throw new InvalidDataException(
                    $"{source}: tensor '{name}' has shape [{string.Join(", ", actual)}], expected [{string.Join(", ", shape)}]");
        }
        var parameters = new Dictionary<string, Tensor>();
        var quantized = new Dictionary<string, Nf4Weight>();
        try
        {
            foreach (var (name, shape) in expected)
            {
                // Decoder linear weights may be 16-bit or 4-bit; the embedding and the head follow linearDtype (a frozen LoRA base:
                // the lookup widens 16-bit rows, the fused loss multiplies on tensor cores) but are never quantized; norms stay fp32.
                bool linear = IsDecoderLinear(config, name, shape);
                bool matrix = shape.Length == 2;
                if (readQuantized?.Invoke(name) is { } stored)
                {
                    if (!linear)
                    {
                        stored.Dispose();
                        throw new InvalidDataException($"{source}: tensor '{name}' is stored in 4 bits, but only decoder linear weights can be");
                    }
                    quantized[name] = stored;
                    continue;
                }
                if (linear && quantization is { } qt)
                {
                    using var dense = Tensor.FromArray(device, read(name), shape).Named(name);
                    quantized[name] = Nf4Weight.Quantize(dense, qt);
                    continue;
                }
                if (embeddingHost is not null && name == config.Spec.Embed)
                {
                    parameters[name] = HostTable(embeddingHost, linearDtype, name, shape, read, readOnHost).Named(name);
                    continue;
                }
                if (matrix && readStored?.Invoke(name, shape) is { } kept)
                {
                    parameters[name] = kept.Named(name);
                    continue;
                }
                parameters[name] = (matrix && linearDtype != DType.F32
                    ? Tensor.FromBytes(device, linearDtype, IO.SafetensorsWriter.Encode(read(name), linearDtype).Span, shape)
                    : Tensor.FromArray(device, read(name), shape)).Named(name);
            }
        }
        catch
        {
            foreach (var t in parameters.Values) t.Dispose();
            foreach (var q in quantized.Values) q.Dispose();
            throw;
        }
        // The dense staging blocks of the quantized weights are free now: hand them back to the driver.
        if (quantized.Count > 0) device.Allocator.EmptyCache();
        return new CausalLM(config, device, parameters, quantized, embeddingHost);
    }

    /// <summary>A randomly initialized model (normal(0, initializerRange), norms = 1), as transformers' _init_weights.</summary>
    public static CausalLM CreateRandom(ModelConfig config, Device device, int seed, float initializerRange = 0.02f)
    {
        var rng = new Random(seed);
        var shapes = ExpectedWeights(config).ToDictionary(e => e.Name, e => e.Shape);
        return FromWeights(config, device, shapes.Keys, k => shapes[k].Select(d => (long)d).ToArray(), name =>
        {
            var data = new float[Tensor.ShapeLength(shapes[name])];
            // A (1 + w) norm starts at w = 0, as Gemma's _init_weights leaves it.
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) Array.Fill(data, config.Spec.NormStyle == NormStyle.OnePlusWeight ? 0f : 1f);
            else if (!name.EndsWith(".bias", StringComparison.Ordinal))
                for (int i = 0; i < data.Length; i++) data[i] = initializerRange * Gaussian(rng);
            return data;
        }, "random init");
    }

    private static string Summarize(List<string> keys) =>
        string.Join(", ", keys.Take(8)) + (keys.Count > 8 ? $" … ({keys.Count} in all)" : "");

    internal static float Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
