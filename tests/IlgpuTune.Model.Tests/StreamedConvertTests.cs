using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// `convert quantize` and `convert merge` run in parallel and streamed (issue 20): their weight files are byte-identical to
/// the sequential algorithm they replaced (kept here as the reference: quantize every linear with Bnb4Bit.Quantize, merge
/// with row-by-row TensorPrimitives.MultiplyAdd, all tensors in memory, one SafetensorsWriter.WriteSharded). The model's
/// sizes make every path count: odd element counts, a last partial block, more than one chunk of blocks, rows left over by
/// the four-row delta blocks and columns left over by the vectors, and several shards.
/// </summary>
public class StreamedConvertTests
{
    // hidden 525 (5 heads of 106), intermediate 1377: gate_proj has 722,925 elements (odd; 11,296 blocks of 64, the last
    // partial), q_proj [530, 525].
    internal static string MakeModel(string dir, DType stored)
    {
        Directory.CreateDirectory(dir);
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama", ["vocab_size"] = 97, ["hidden_size"] = 525,
            ["intermediate_size"] = 1377, ["num_hidden_layers"] = 2, ["num_attention_heads"] = 5, ["num_key_value_heads"] = 5, ["head_dim"] = 106,
            ["hidden_act"] = "silu", ["max_position_embeddings"] = 64, ["rms_norm_eps"] = 1e-5, ["tie_word_embeddings"] = false,
            ["torch_dtype"] = stored == DType.BF16 ? "bfloat16" : "float32",
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var rng = new Random(20);
        var tensors = CausalLM.ExpectedWeights(ModelConfig.Load(dir)).Select(e =>
        {
            var data = new float[e.Shape.Aggregate(1, (a, d) => a * d)];
            for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() - 0.5) * 0.1f;
            return new TensorToWrite(e.Name, stored, [.. e.Shape.Select(d => (long)d)], SafetensorsWriter.Encode(data, stored));
        }).ToList();
        SafetensorsWriter.WriteSharded(dir, "model", tensors, 1_500_000);
        return dir;
    }

    internal static string MakeAdapter(string dir, string baseDir, int r)
    {
        var model = ModelConfig.Load(baseDir);
        var linears = CausalLM.ExpectedWeights(model).Where(e => CausalLM.IsDecoderLinear(model, e.Name, e.Shape)).ToList();
        var rng = new Random(7);
        float[] Random(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.2f)];
        var tensors = linears.SelectMany(l =>
        {
            string m = "base_model.model." + l.Name[..^".weight".Length];
            return new[]
            {
                (m + ".lora_A.weight", Random(r * l.Shape[1]), new[] { r, l.Shape[1] }),
                (m + ".lora_B.weight", Random(l.Shape[0] * r), new[] { l.Shape[0], r }),
            };
        }).ToList();
        PeftAdapter.Write(dir, new LoraConfig(r, 16, 0, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], false),
            linears.Select(l => l.Name[..^".weight".Length]), tensors, baseDir);
        return dir;
    }

    private static void AssertSameWeightFiles(string expected, string actual)
    {
        var names = Directory.GetFiles(expected, "model*").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.True(names.Count > 2, $"expected several shards, got {string.Join(", ", names)}");
        Assert.Equal(names, Directory.GetFiles(actual, "model*").Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var n in names)
            Assert.True(File.ReadAllBytes(Path.Combine(expected, n!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actual, n!))),
                $"{n} differs");
    }

    [Theory]
    [InlineData("nf4", true, DType.BF16)]
    [InlineData("fp4", false, DType.BF16)]
    [InlineData("nf4", true, DType.F32)]
    public void Quantize_WritesTheSequentialAlgorithmsBytes(string quantType, bool doubleQuant, DType stored)
    {
        using var tmp = new TempDir();
        string baseDir = MakeModel(tmp.File("base"), stored), expected = tmp.File("expected");
        const long shard = 400_000;
        using (var weights = WeightSource.Open(baseDir))
        {
            var model = ModelConfig.Load(baseDir);
            var linear = CausalLM.ExpectedWeights(model).Where(e => CausalLM.IsDecoderLinear(model, e.Name, e.Shape)).Select(e => e.Name).ToHashSet();
            var tensors = new List<TensorToWrite>();
            foreach (var name in weights.Names)
            {
                var shape = weights.Shape(name);
                if (!linear.Contains(name))
                {
                    tensors.Add(new TensorToWrite(name, DTypeInfo.FromSafetensorsName(weights.DTypeOf(name))!.Value, shape, weights.ReadBytes(name)));
                    continue;
                }
                string dtype = weights.DTypeOf(name) == "BF16" ? "bfloat16" : "float32";
                tensors.AddRange(Bnb4Bit.Tensors(name, Bnb4Bit.Quantize(weights.ReadFloat32(name), [.. shape.Select(d => (int)d)], quantType, doubleQuant, dtype)));
            }
            SafetensorsWriter.WriteSharded(expected, "model", tensors, shard);
        }
        string actual = tmp.File("q");
        QuantizedExport.Run(baseDir, actual, shard, quantType, doubleQuant);
        AssertSameWeightFiles(expected, actual);
        Assert.DoesNotContain(Directory.GetFiles(actual), f => f.EndsWith(".spill", StringComparison.Ordinal));
        Assert.Empty(Directory.GetDirectories(tmp.Path, "q.tmp-*"));
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    [InlineData(DType.F32)]
    public void Merge_WritesTheSequentialAlgorithmsBytes(DType dtype)
    {
        using var tmp = new TempDir();
        string baseDir = MakeModel(tmp.File("base"), DType.BF16), adapterDir = MakeAdapter(tmp.File("adapter"), baseDir, 12);
        string expected = tmp.File("expected");
        const long shard = 1_000_000;
        var lora = PeftAdapter.ReadConfig(adapterDir);
        using (var weights = WeightSource.Open(baseDir))
        using (var adapter = WeightSource.Open(adapterDir, PeftAdapter.WeightsFile))
        {
            var tensors = weights.Names.Select(name =>
            {
                var shape = weights.Shape(name);
                var w = weights.ReadFloat32(name);
                string a = "base_model.model." + name[..^".weight".Length] + ".lora_A.weight";
                if (adapter.Contains(a))
                {
                    var (av, bv) = (adapter.ReadFloat32(a), adapter.ReadFloat32(a.Replace("lora_A", "lora_B")));
                    int outF = (int)shape[0], inF = (int)shape[1];
                    var row = new float[inF];
                    for (int o = 0; o < outF; o++)
                    {
                        Array.Clear(row);
                        for (int k = 0; k < lora.R; k++) TensorPrimitives.MultiplyAdd(av.AsSpan(k * inF, inF), bv[o * lora.R + k], row, row);
                        TensorPrimitives.MultiplyAdd(row, lora.Scaling, w.AsSpan(o * inF, inF), w.AsSpan(o * inF, inF));
                    }
                }
                var bits = new ushort[w.Length];
                if (dtype == DType.BF16) for (int i = 0; i < w.Length; i++) bits[i] = HalfBits.FloatToBf16(w[i]);
                else if (dtype == DType.F16) TensorPrimitives.ConvertToHalf(w, MemoryMarshal.Cast<ushort, Half>(bits.AsSpan()));
                byte[] data = dtype == DType.F32
                    ? [.. w.SelectMany(BitConverter.GetBytes)]
                    : [.. bits.SelectMany(BitConverter.GetBytes)];
                return new TensorToWrite(name, dtype, shape, data);
            }).ToList();
            SafetensorsWriter.WriteSharded(expected, "model", tensors, shard);
        }
        string actual = tmp.File("merged");
        var summary = Merge.Run(baseDir, adapterDir, actual, shard, dtype);
        Assert.Equal(14, summary.MergedModules.Count);
        AssertSameWeightFiles(expected, actual);
    }

    [Fact]
    public void Nf4Blocks_GiveNf4CodecsBytes_AtTheThresholdsAndOnOddValues()
    {
        // Blocks whose absmax is 1 (so the scaled value is the value): every threshold, its neighbours, NaN, ±0, ±Inf blocks,
        // then random blocks and a partial last block.
        float[] thresholds = [-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
            -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f, 0.2035212516784668f,
            0.2920137718319893f, 0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f];
        var values = new List<float> { 1f, -0f, 0f, float.NaN };
        foreach (var t in thresholds) values.AddRange([t, MathF.BitIncrement(t), MathF.BitDecrement(t)]);
        while (values.Count % 64 != 0) values.Add(-1f);
        values.AddRange(Enumerable.Repeat(0f, 64));                   // absmax 0: 1/0 = Inf, 0·Inf = NaN
        values.AddRange([float.PositiveInfinity, .. Enumerable.Repeat(0.5f, 63)]);
        var rng = new Random(9);
        values.AddRange(Enumerable.Range(0, 64 * 40 + 37).Select(_ => (float)(rng.NextDouble() - 0.5) * (float)Math.Pow(10, rng.Next(-6, 3))));
        var x = values.ToArray();
        int blocks = (x.Length + 63) / 64;
        byte[] expected = new byte[(x.Length + 1) / 2], actual = new byte[expected.Length];
        float[] expectedAbsmax = new float[blocks], actualAbsmax = new float[blocks];
        Nf4Codec.QuantizeCpu(x, 64, QuantType.Nf4, expected, expectedAbsmax);
        Nf4Blocks.Quantize(x, actual, actualAbsmax);
        Assert.Equal(expected, actual);
        Assert.Equal(expectedAbsmax, actualAbsmax);
    }
}
