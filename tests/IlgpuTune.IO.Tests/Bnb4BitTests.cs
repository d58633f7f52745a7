using System.Text;
using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.IO.Tests;

/// <summary>bitsandbytes 4-bit checkpoints against tests/fixtures/bnb (tools/golden/make_bnb_checkpoint.py, torch 2.11,
/// transformers 5.17): reading, dequantizing, quantizing, writing byte for byte, and refusing malformed files.</summary>
public class Bnb4BitTests
{
    private static string Fixture(string dir, string file = "model.safetensors") => Repo.Fixture($"bnb/{dir}/{file}");

    // mixed: (key, quant_type, blocksize, dtype, shape, nested)
    private static readonly (string Key, string Type, int Block, string DType, int[] Shape, bool Nested)[] Mixed =
    [
        ("a.weight", "nf4", 64, "float32", [7, 13], true),
        ("b.weight", "fp4", 64, "float16", [5, 3], false),
        ("c.weight", "fp4", 128, "bfloat16", [48, 20], true),
        ("d.weight", "nf4", 32, "bfloat16", [67, 129], true),
        ("e.weight", "nf4", 64, "bfloat16", [24, 16], false),
    ];

    public static TheoryData<string> Dirs => new() { "llama", "mixed" };

    [Fact]
    public void Mixed_ReadsEveryField_BytesEqualTheStoredTensors()
    {
        using var w = SafetensorsModel.Open(Fixture("mixed"));
        foreach (var (key, type, block, dtype, shape, nested) in Mixed)
        {
            var q = Bnb4Bit.Read(w, key);
            Assert.True(Bnb4Bit.IsQuantized(w, key));
            Assert.Equal((type, block, dtype, nested), (q.QuantType, q.BlockSize, q.DType, q.Nested));
            Assert.Equal(shape, q.Shape);
            Assert.Equal(w.ReadBytes(key), q.Packed);
            Assert.Equal(w.ReadFloat32(key + ".quant_map"), q.QuantMap);
            if (nested)
            {
                Assert.Equal(w.ReadBytes(key + ".absmax"), q.QAbsmax);
                Assert.Equal(w.ReadFloat32(key + ".nested_absmax"), q.NestedAbsmax);
                Assert.Equal(w.ReadFloat32(key + ".nested_quant_map"), q.NestedQuantMap);
                Assert.Equal(256, q.NestedBlockSize);
                Assert.Null(q.Absmax);
            }
            else
            {
                Assert.Equal(w.ReadFloat32(key + ".absmax"), q.Absmax);
                Assert.Null(q.QAbsmax);
                Assert.Null(q.NestedAbsmax);
            }
            Assert.Equal(Encoding.UTF8.GetString(w.ReadBytes(key + "." + Bnb4Bit.QuantStatePrefix + type)), Bnb4Bit.QuantStateJson(q));
        }
        Assert.False(Bnb4Bit.IsQuantized(w, "c.bias"));
        Assert.Equal(2, Bnb4Bit.Read(w, "d.weight").NestedAbsmax!.Length); // 271 blocks of 32: two nested blocks
    }

    // Dequantizing with the CPU references gives torch's absmax bit for bit and torch's dequantized weight after rounding to
    // the weight's dtype (FP4 zero compares equal: CUDA's table has -0.0 where the stored quant_map has +0.0).
    [Theory]
    [MemberData(nameof(Dirs))]
    public void Dequantize_EqualsTorch(string dir)
    {
        using var w = SafetensorsModel.Open(Fixture(dir));
        using var gold = SafetensorsModel.Open(Fixture(dir, "golden.safetensors"));
        var layout = Bnb4Bit.Layout(w);
        Assert.NotEmpty(layout.QuantizedWeights);
        foreach (var key in layout.QuantizedWeights)
        {
            var q = Bnb4Bit.Read(w, key);
            Assert.Equal(Bits(gold.ReadFloat32("absmax." + key)), Bits(q.DequantizeAbsmax()));
            var expected = gold.ReadFloat32("dequant." + key);
            var actual = RoundTo(q.Dequantize(), q.DType);
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; i++)
                Assert.True(expected[i] == actual[i], $"{key}[{i}]: torch {expected[i]}, ours {actual[i]}");
            Assert.Equal(gold.Shape("original." + key), q.Shape.Select(d => (long)d).ToArray());
        }
    }

    // Quantizing torch's originals with the engine gives the same bytes; the nested offset is a mean, where torch's float32
    // reduction may differ from our double sum in the last bit, so nested fields are compared after taking torch's offset.
    [Theory]
    [MemberData(nameof(Dirs))]
    public void Quantize_OfTheOriginals_EqualsTorch(string dir)
    {
        using var w = SafetensorsModel.Open(Fixture(dir));
        using var gold = SafetensorsModel.Open(Fixture(dir, "golden.safetensors"));
        foreach (var key in Bnb4Bit.Layout(w).QuantizedWeights)
        {
            var t = Bnb4Bit.Read(w, key);
            var q = Bnb4Bit.Quantize(gold.ReadFloat32("original." + key), t.Shape, t.QuantType, t.Nested, t.DType, t.BlockSize);
            Assert.Equal(t.Packed, q.Packed);
            Assert.Equal(Bits(t.QuantMap), Bits(q.QuantMap));
            Assert.Equal(t.DType, q.DType);
            if (!t.Nested)
            {
                Assert.Equal(Bits(t.Absmax!), Bits(q.Absmax!));
                continue;
            }
            Assert.Equal(Bits(t.NestedQuantMap!), Bits(q.NestedQuantMap!));
            Assert.True(Math.Abs(q.NestedOffset - t.NestedOffset) <= 2e-7 * Math.Abs(t.NestedOffset), $"{key}: offset {q.NestedOffset} vs {t.NestedOffset}");
            var absmax = new float[t.Blocks];
            Nf4Codec.QuantizeCpu(gold.ReadFloat32("original." + key), t.BlockSize, t.Type, new byte[t.Packed.Length], absmax);
            var qabsmax = new byte[t.Blocks];
            var absmax2 = new float[t.NestedAbsmax!.Length];
            Nf4Codec.QuantizeBlockwise8Cpu(absmax, t.NestedOffset, t.NestedQuantMap, 256, qabsmax, absmax2);
            Assert.Equal(t.QAbsmax, qabsmax);
            Assert.Equal(Bits(t.NestedAbsmax), Bits(absmax2));
        }
    }

    // Read every tensor (bnb weights through Bnb4Bit, the rest as raw bytes), write with SafetensorsWriter: the file equals
    // the torch-written one byte for byte (both sort the header by dtype then name), and reads back to the same weights.
    [Theory]
    [MemberData(nameof(Dirs))]
    public void Write_ReproducesTheTorchFile_AndRoundTrips(string dir)
    {
        using var tmp = new TempDir();
        string path = tmp.File("model.safetensors");
        var read = new Dictionary<string, Bnb4BitWeight>();
        using (var w = SafetensorsModel.Open(Fixture(dir)))
        {
            var layout = Bnb4Bit.Layout(w);
            var tensors = new List<TensorToWrite>();
            foreach (var key in layout.QuantizedWeights)
            {
                read[key] = Bnb4Bit.Read(w, key);
                tensors.AddRange(Bnb4Bit.Tensors(key, read[key]));
            }
            foreach (var name in layout.PlainTensors)
                tensors.Add(new TensorToWrite(name, DTypeInfo.FromSafetensorsName(w.DTypeOf(name))!.Value, w.Shape(name), w.ReadBytes(name)));
            SafetensorsWriter.Write(path, tensors);
        }
        Assert.Equal(File.ReadAllBytes(Fixture(dir)), File.ReadAllBytes(path));
        using var back = SafetensorsModel.Open(path);
        foreach (var (key, q) in read)
        {
            var r = Bnb4Bit.Read(back, key);
            Assert.Equal(q.Packed, r.Packed);
            Assert.Equal(q.QAbsmax, r.QAbsmax);
            Assert.Equal(q.Absmax, r.Absmax);
            Assert.Equal(q.NestedAbsmax, r.NestedAbsmax);
            Assert.Equal(q.NestedOffset, r.NestedOffset);
            Assert.Equal(q.Shape, r.Shape);
        }
    }

    [Fact]
    public void Quantize_ThenWriteAndRead_RoundTrips()
    {
        var rand = new Random(5);
        var x = Enumerable.Range(0, 9 * 31).Select(_ => (float)rand.NextDouble() - 0.5f).ToArray();
        using var tmp = new TempDir();
        foreach (var (type, nested) in new[] { ("nf4", true), ("fp4", false) })
        {
            var q = Bnb4Bit.Quantize(x, [9, 31], type, nested, "float32");
            string path = tmp.File(type + ".safetensors");
            SafetensorsWriter.Write(path, Bnb4Bit.Tensors("m.weight", q));
            using var w = SafetensorsModel.Open(path);
            var r = Bnb4Bit.Read(w, "m.weight");
            Assert.Equal(q.Packed, r.Packed);
            Assert.Equal(q.NestedOffset, r.NestedOffset);
            Assert.Equal(q.Dequantize(), r.Dequantize());
            Assert.Equal(nested ? 6 : 4, w.Names.Count);
            var err = x.Zip(r.Dequantize(), (a, b) => Math.Abs(a - b)).Max();
            Assert.True(err < 0.1f, $"{type}: max |x - dequant| = {err}");
        }
    }

    [Fact]
    public void Layout_SplitsQuantizedFromPlain_AndReadsTheConfig()
    {
        using var w = SafetensorsModel.Open(Fixture("llama"));
        var layout = Bnb4Bit.Layout(w);
        Assert.Equal(new BnbQuantizationConfig(true, false, "nf4", true, "bfloat16", "uint8", null), layout.Config);
        Assert.Equal(14, layout.QuantizedWeights.Count);
        Assert.All(layout.QuantizedWeights, k => Assert.Matches(@"^model\.layers\.[01]\.(self_attn|mlp)\.[a-z]+_proj\.weight$", k));
        Assert.Equal(
        [
            "lm_head.weight", "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight", "model.layers.1.input_layernorm.weight",
            "model.layers.1.post_attention_layernorm.weight", "model.norm.weight",
        ], layout.PlainTensors.Order(StringComparer.Ordinal));
        Assert.Equal(w.Names.Count, layout.PlainTensors.Count + 14 * 6);

        using var m = SafetensorsModel.Open(Fixture("mixed"));
        var mixed = Bnb4Bit.Layout(m);
        Assert.Equal(Mixed.Select(t => t.Key).Order(), mixed.QuantizedWeights.Order());
        Assert.Equal(["c.bias", "embed.weight", "norm.weight"], mixed.PlainTensors.Order(StringComparer.Ordinal));
    }

    [Theory]
    [MemberData(nameof(Dirs))]
    public void QuantizationConfig_IsWhatTransformersWrote(string dir)
    {
        var written = JsonNode.Parse(File.ReadAllText(Fixture(dir, "config.json")))!["quantization_config"];
        var ours = Bnb4Bit.QuantizationConfig("nf4", doubleQuant: true, computeDType: "bfloat16");
        Assert.True(JsonNode.DeepEquals(written, ours), ours.ToJsonString());
        Assert.Contains("\"llm_int8_threshold\":6.0", ours.ToJsonString());
        Assert.Equal(["attn", "lm_head"], Bnb4Bit.QuantizationConfig(skipModules: ["attn", "lm_head"])["llm_int8_skip_modules"]!
            .AsArray().Select(n => (string)n!));
    }

    [Fact]
    public void BnbQuantizationConfig_RefusesOtherMethods_AndIsNullWithoutOne()
    {
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("a.json"), """{"quantization_config": {"quant_method": "gptq", "bits": 4}}""");
        var e = Assert.Throws<NotSupportedException>(() => BnbQuantizationConfig.Read(tmp.File("a.json")));
        Assert.Contains("gptq", e.Message);
        File.WriteAllText(tmp.File("b.json"), """{"model_type": "llama"}""");
        Assert.Null(BnbQuantizationConfig.Read(tmp.File("b.json")));
        File.WriteAllText(tmp.File("c.json"), """{"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": true}}""");
        Assert.True(BnbQuantizationConfig.Read(tmp.File("c.json"))!.LoadIn8Bit);
    }

    [Theory]
    [InlineData(0.51708984375, "0.51708984375")]
    [InlineData(2.6792421340942383, "2.6792421340942383")]
    [InlineData(6.0, "6.0")]
    [InlineData(-0.0, "-0.0")]
    [InlineData(0.0, "0.0")]
    [InlineData(1e-05, "1e-05")]
    [InlineData(1.5e-07, "1.5e-07")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(123456789012345680.0, "1.2345678901234568e+17")]
    [InlineData(-12.5, "-12.5")]
    [InlineData(3.4028234663852886e+38, "3.4028234663852886e+38")]
    public void PythonFloat_IsPythonsRepr(double x, string repr) => Assert.Equal(repr, Bnb4Bit.PythonFloat(x));

    // ---- malformed checkpoints: the mixed fixture with one tensor changed ----

    private static InvalidDataException Malformed(string key, Func<TensorToWrite, TensorToWrite?> change, string weight = "a.weight")
    {
        using var tmp = new TempDir();
        string path = tmp.File("bad.safetensors");
        using (var w = SafetensorsModel.Open(Fixture("mixed")))
        {
            var tensors = w.Names.Select(n => new TensorToWrite(n, DTypeInfo.FromSafetensorsName(w.DTypeOf(n))!.Value, w.Shape(n), w.ReadBytes(n)))
                .Select(t => t.Name == key ? change(t) : t).OfType<TensorToWrite>().ToList();
            SafetensorsWriter.Write(path, tensors);
        }
        using var bad = SafetensorsModel.Open(path);
        var e = Assert.Throws<InvalidDataException>(() => Bnb4Bit.Read(bad, weight));
        Assert.Contains(path, e.Message);
        return e;
    }

    private static TensorToWrite Json(string json) =>
        new("a.weight.quant_state.bitsandbytes__nf4", DType.U8, [Encoding.UTF8.GetByteCount(json)], Encoding.UTF8.GetBytes(json));

    private const string AJson =
        """{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [7, 13], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 2.6792421340942383}""";

    [Fact]
    public void Malformed_MissingAbsmax()
    {
        var e = Malformed("a.weight.absmax", _ => null);
        Assert.Contains("missing tensor 'a.weight.absmax'", e.Message);
    }

    [Fact]
    public void Malformed_QuantMapOf15()
    {
        var e = Malformed("a.weight.quant_map", t => SafetensorsWriter.F32(t.Name, new float[15], 15));
        Assert.Contains("'a.weight.quant_map': shape [15]; expected [16]", e.Message);
    }

    [Fact]
    public void Malformed_AbsmaxOfTheWrongDtype()
    {
        var e = Malformed("a.weight.absmax", t => SafetensorsWriter.F32(t.Name, new float[2], 2));
        Assert.Contains("'a.weight.absmax': dtype F32; expected U8", e.Message);
    }

    [Fact]
    public void Malformed_BadJson()
    {
        var e = Malformed("a.weight.quant_state.bitsandbytes__nf4", _ => Json("{\"quant_type\": \"nf4\", "));
        Assert.Contains("'a.weight.quant_state.bitsandbytes__nf4'", e.Message);
        Assert.Contains("not valid JSON", e.Message);
    }

    [Fact]
    public void Malformed_ShapeDisagreesWithThePackedWeight()
    {
        var e = Malformed("a.weight.quant_state.bitsandbytes__nf4", _ => Json(AJson.Replace("[7, 13]", "[7, 14]")));
        Assert.Contains("'a.weight': shape [46, 1]; expected [49, 1]", e.Message);
    }

    [Theory]
    [InlineData("\"quant_type\": \"nf4\"", "\"quant_type\": \"fp4\"", "does not match")]
    [InlineData("\"blocksize\": 64", "\"blocksize\": 48", "blocksize 48")]
    [InlineData("\"blocksize\": 64", "\"blocksize\": \"64\"", "wrong type")]
    [InlineData("\"dtype\": \"float32\"", "\"dtype\": \"int8\"", "dtype 'int8'")]
    [InlineData("\"nested_dtype\": \"float32\"", "\"nested_dtype\": \"float16\"", "nested_dtype")]
    [InlineData(", \"nested_blocksize\": 256", ", \"nested_blocksize\": 256, \"extra\": 1", "unknown quant_state key 'extra'")]
    [InlineData("\"blocksize\": 64, ", "", "has no 'blocksize'")]
    [InlineData("[7, 13]", "[null]", "'shape' holds null")]                                        // was a NullReferenceException
    [InlineData("\"blocksize\": 64", "\"blocksize\": 64, \"blocksize\": 64", "duplicate key 'blocksize'")]   // was a raw ArgumentException
    [InlineData("\"dtype\": \"float32\"", "\"dtype\": \"\\ud800\"", "not valid UTF-16")]
    [InlineData(", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 2.6792421340942383", "",
        "'a.weight.absmax': dtype U8; expected F32")]
    public void Malformed_QuantStateFields(string from, string to, string expected)
    {
        Assert.Contains(from, AJson);
        var e = Malformed("a.weight.quant_state.bitsandbytes__nf4", _ => Json(AJson.Replace(from, to)));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Malformed_NestedAbsmaxOfTheWrongLength()
    {
        var e = Malformed("d.weight.nested_absmax", t => SafetensorsWriter.F32(t.Name, new float[1], 1), "d.weight");
        Assert.Contains("'d.weight.nested_absmax': shape [1]; expected [2]", e.Message);
    }

    [Fact]
    public void Malformed_NotQuantized_And_Layout_RefusesOrphanCompanions()
    {
        var e = Malformed("a.weight.quant_state.bitsandbytes__nf4", _ => null);
        Assert.Contains("not a bnb 4-bit weight", e.Message);
        using var tmp = new TempDir();
        string path = tmp.File("model.safetensors");
        using (var w = SafetensorsModel.Open(Fixture("mixed")))
            SafetensorsWriter.Write(path, w.Names.Where(n => n != "a.weight.quant_state.bitsandbytes__nf4")
                .Select(n => new TensorToWrite(n, DTypeInfo.FromSafetensorsName(w.DTypeOf(n))!.Value, w.Shape(n), w.ReadBytes(n))));
        using var bad = SafetensorsModel.Open(path);
        var le = Assert.Throws<InvalidDataException>(() => Bnb4Bit.Layout(bad, Fixture("mixed", "config.json")));
        Assert.Contains("'a.weight.", le.Message);
        Assert.Contains("quant_state", le.Message);
    }

    [Fact]
    public void Writer_RefusesInconsistentWeights()
    {
        var q = Bnb4Bit.Quantize(new float[100], [10, 10]);
        Assert.Throws<InvalidDataException>(() => Bnb4Bit.Tensors("x", q with { Packed = new byte[49] }));
        Assert.Throws<InvalidDataException>(() => Bnb4Bit.Tensors("x", q with { QuantMap = new float[8] }));
        Assert.Throws<InvalidDataException>(() => Bnb4Bit.Tensors("x", q with { BlockSize = 16 }));
    }

    // The same state dict saved with torch.save (safe_serialization=False) reads to the same weights.
    [Fact]
    public void TorchBin_ReadsLikeSafetensors()
    {
        using var tmp = new TempDir();
        string path = tmp.File("pytorch_model.bin");
        using var st = SafetensorsModel.Open(Fixture("mixed"));
        string[] storageClass = ["ByteStorage", "FloatStorage", "HalfStorage", "BFloat16Storage"];
        string[] dtypes = ["U8", "F32", "F16", "BF16"];
        var items = new List<(string, FakeTensor)>();
        var records = new Dictionary<string, byte[]>();
        foreach (var (n, i) in st.Names.Select((n, i) => (n, i)))
        {
            var shape = st.Shape(n);
            long numel = shape.Aggregate(1L, (a, d) => a * d);
            var stride = shape.Select((_, k) => shape.Skip(k + 1).Aggregate(1L, (a, d) => a * d)).ToArray();
            items.Add((n, new FakeTensor(storageClass[Array.IndexOf(dtypes, st.DTypeOf(n))], i.ToString(), numel, 0, shape, stride)));
            records[i.ToString()] = st.ReadBytes(n);
        }
        TorchFiles.WriteZip(path, TorchFiles.StateDictPickle(items), records);
        using var bin = TorchCheckpoint.Open(path);
        foreach (var (key, _, _, _, _, _) in Mixed)
        {
            Assert.True(Bnb4Bit.IsQuantized(bin, key));
            var (a, b) = (Bnb4Bit.Read(st, key), Bnb4Bit.Read(bin, key));
            Assert.Equal(Bnb4Bit.QuantStateJson(a), Bnb4Bit.QuantStateJson(b));
            Assert.Equal(a.Packed, b.Packed);
            Assert.Equal(a.DequantizeAbsmax(), b.DequantizeAbsmax());
            Assert.Equal(a.Dequantize(), b.Dequantize());
        }
        var layout = Bnb4Bit.Layout(bin, Fixture("mixed", "config.json"));
        Assert.Equal(5, layout.QuantizedWeights.Count);
        Assert.Equal(3, layout.PlainTensors.Count);
    }

    // ---- ReadBytes ----

    [Theory]
    [InlineData("tensors.bin")]
    [InlineData("tensors_legacy.bin")]
    [InlineData("tensors_p4.bin")]
    public void ReadBytes_Torch_EqualsTheSafetensorsBytes(string file)
    {
        using var ckpt = TorchCheckpoint.Open(Repo.Fixture("torch/" + file));
        using var expected = SafetensorsModel.Open(Repo.Fixture("torch/tensors.safetensors"));
        foreach (var n in expected.Names)
            Assert.Equal(expected.ReadBytes(n), ckpt.ReadBytes(n));
        Assert.Contains("u8", expected.Names);
        Assert.Contains("transposed", expected.Names);
    }

    [Fact]
    public void ReadBytes_Safetensors_IsTheStoredBytes()
    {
        using var tmp = new TempDir();
        byte[] u8 = [0, 1, 0x7F, 0x80, 0xFF];
        SafetensorsWriter.Write(tmp.File("x.safetensors"),
            [new TensorToWrite("u8", DType.U8, [5], u8), SafetensorsWriter.F32("f", [1.5f, -2f], 2)]);
        using var f = SafetensorsModel.Open(tmp.File("x.safetensors"));
        Assert.Equal(u8, f.ReadBytes("u8"));
        Assert.Equal(Bytes.Of(1.5f, -2f), f.ReadBytes("f"));
        IWeightSource s = f;
        Assert.Equal(u8, s.ReadBytes("u8"));
    }

    private static int[] Bits(float[] v) => v.Select(BitConverter.SingleToInt32Bits).ToArray();

    private static float[] RoundTo(float[] v, string dtype) => dtype switch
    {
        "bfloat16" => v.Select(x => HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(x))).ToArray(),
        "float16" => v.Select(x => HalfBits.F16ToFloat(HalfBits.FloatToF16(x))).ToArray(),
        _ => v,
    };
}
