using System.Text.Json.Nodes;
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>convert merge: the merged folder computes what base + adapter compute (PEFT's goldens and our own LoRA path),
/// streams one tensor at a time, and is written atomically.</summary>
public class MergeTests
{
    private static string Tiny(string arch) => Repo.Fixture("tiny/" + arch);

    private static (int[] Ids, float[] LoraLogits) Golden(string arch)
    {
        using var g = SafetensorsFile.Open(Path.Combine(Tiny(arch), "golden.safetensors"));
        return (g.ReadInt32("input_ids"), g.ReadFloat32("lora_logits"));
    }

    private static float[] Logits(CausalLM model, int[] ids)
    {
        using var logits = model.Forward(ids, 2, ids.Length / 2);
        return logits.ToFloatArray();
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("mistral")]
    [InlineData("qwen2")]     // tied head, q/k/v biases
    [InlineData("internlm2")] // adapter on wo/w1/w2/w3 under InternLM2 names
    [InlineData("qwen3")]
    [InlineData("internlm")]
    [InlineData("phi3")]      // adapter on the fused qkv_proj / gate_up_proj
    [InlineData("gemma3_text")]
    [InlineData("mistral_sw")]
    [InlineData("mixtral")]   // adapter on the experts
    [InlineData("qwen3_moe")]
    public void MergedModel_GivesTheAdapterOnBaseLogits(string arch)
    {
        using var tmp = new TempDir();
        string outDir = tmp.File("merged");
        var summary = Merge.Run(Tiny(arch), Path.Combine(Tiny(arch), "adapter"), outDir, 100_000, DType.F32);
        Assert.NotEmpty(summary.MergedModules);
        Assert.True(summary.Files.Count > 2, "expected several shards plus an index at a 100 kB limit");
        Assert.Contains("model.safetensors.index.json", summary.Files);

        var (ids, peftLogits) = Golden(arch);
        using var device = Device.Create("cpu");
        using var merged = ModelLoader.Load(outDir, device);
        var mergedLogits = Logits(merged, ids);
        Close.Assert($"{arch} merged vs PEFT lora_logits", peftLogits, mergedLogits, 1e-4, 1e-4);
        using var onBase = ModelLoader.Load(Tiny(arch), device);
        PeftAdapter.Load(Path.Combine(Tiny(arch), "adapter"), onBase);
        Close.Assert($"{arch} merged vs adapter on base", Logits(onBase, ids), mergedLogits, 1e-5, 1e-5);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!.AsObject();
        Assert.Equal("float32", (string?)config["torch_dtype"]);
        Assert.Equal("float32", (string?)config["dtype"]);
        var baseConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(Tiny(arch), "config.json")))!.AsObject();
        foreach (var (k, v) in baseConfig)
            if (k is not ("dtype" or "torch_dtype")) Assert.True(JsonNode.DeepEquals(v, config[k]), $"config key {k} changed");
        if (File.Exists(Path.Combine(Tiny(arch), "generation_config.json")))
            Assert.Equal(File.ReadAllBytes(Path.Combine(Tiny(arch), "generation_config.json")),
                File.ReadAllBytes(Path.Combine(outDir, "generation_config.json")));
    }

    [Fact]
    public void InternLM2_LoraOnFusedWqkv_MergesInItsOwnLayout()
    {
        using var tmp = new TempDir();
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Tiny("internlm2"), device);
        var lora = new LoraConfig(3, 6, 0, ["wqkv", "w2"]);
        var rng = new Random(7);
        foreach (var l in model.Linears.Where(l => lora.Targets(l.Name)))
            l.AttachLora(lora,
                Tensor.FromArray(device, Rand.Floats(rng.Next(), lora.R * l.InFeatures, 0.3f), lora.R, l.InFeatures),
                Tensor.FromArray(device, Rand.Floats(rng.Next(), l.OutFeatures * lora.R, 0.3f), l.OutFeatures, lora.R));
        string adapterDir = tmp.File("adapter");
        PeftAdapter.Save(adapterDir, model, "tiny/internlm2");

        var summary = Merge.Run(Tiny("internlm2"), adapterDir, tmp.File("merged"), 1L << 30, DType.F32);
        Assert.Equal(["model.layers.0.attention.wqkv", "model.layers.0.feed_forward.w2", "model.layers.1.attention.wqkv",
            "model.layers.1.feed_forward.w2"], summary.MergedModules);
        Assert.Equal(["model.safetensors"], summary.Files);
        var (ids, _) = Golden("internlm2");
        using var merged = ModelLoader.Load(tmp.File("merged"), device);
        Close.Assert("wqkv merge", Logits(model, ids), Logits(merged, ids), 1e-5, 1e-5);
    }

    [Theory]
    [InlineData(DType.BF16, "bfloat16")]
    [InlineData(DType.F16, "float16")]
    public void HalfOutput_IsTheFp32MergeRoundedOnce(DType dtype, string torchName)
    {
        using var tmp = new TempDir();
        string adapter = Path.Combine(Tiny("llama"), "adapter");
        Merge.Run(Tiny("llama"), adapter, tmp.File("f32"), 1L << 30, DType.F32);
        Merge.Run(Tiny("llama"), adapter, tmp.File("half"), 1L << 30, dtype);
        using var f32 = SafetensorsModel.Open(tmp.File("f32"));
        using var half = SafetensorsModel.Open(tmp.File("half"));
        Assert.Equal(f32.Names.Order(StringComparer.Ordinal), half.Names.Order(StringComparer.Ordinal));
        foreach (var n in f32.Names)
        {
            Assert.Equal(dtype.SafetensorsName(), half.DTypeOf(n));
            var expected = f32.ReadFloat32(n).Select(v => dtype == DType.BF16
                ? HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(v)) : HalfBits.F16ToFloat(HalfBits.FloatToF16(v)));
            Assert.Equal(expected, half.ReadFloat32(n));
        }
        var config = JsonNode.Parse(File.ReadAllText(tmp.File("half/config.json")))!;
        Assert.Equal(torchName, (string?)config["torch_dtype"]);
        Assert.Equal(torchName, (string?)config["dtype"]);
    }

    [Fact]
    public void TorchBinBase_MergesToTheSameBytesAsTheSafetensorsBase()
    {
        using var tmp = new TempDir();
        string adapter = Path.Combine(Tiny("llama"), "adapter");
        Merge.Run(Tiny("llama"), adapter, tmp.File("a"), 1L << 30, DType.F32);
        Merge.Run(Repo.Fixture("torch/llama"), adapter, tmp.File("b"), 1L << 30, DType.F32);
        Assert.Equal(File.ReadAllBytes(tmp.File("a/model.safetensors")), File.ReadAllBytes(tmp.File("b/model.safetensors")));
    }

    /// <summary>Measures, at every float32 read, how far reading runs ahead of writing: bytes read (this one included) minus
    /// the bytes in the output folder's files (reads come from several threads).</summary>
    private sealed class TrackingSource(IWeightSource inner, string outDir) : IWeightSource
    {
        private long _read;
        public long MaxAhead { get; private set; }
        public int Reads { get; private set; }
        public string Path => inner.Path;
        public IReadOnlyCollection<string> Names => inner.Names;
        public bool Contains(string name) => inner.Contains(name);
        public long[] Shape(string name) => inner.Shape(name);
        public string DTypeOf(string name) => inner.DTypeOf(name);
        public int[] ReadInt32(string name) => inner.ReadInt32(name);
        public void Dispose() => inner.Dispose();

        public float[] ReadFloat32(string name)
        {
            var data = new float[inner.Shape(name).Aggregate(1L, (a, d) => a * d)];
            ReadFloat32(name, data);
            return data;
        }

        public void ReadFloat32(string name, Span<float> destination)
        {
            lock (this)
            {
                Reads++;
                _read += 4L * destination.Length;
                MaxAhead = Math.Max(MaxAhead, _read - Written());
            }
            inner.ReadFloat32(name, destination);
        }

        // A temp shard may be renamed between listing and measuring: measure again.
        private long Written()
        {
            while (true)
            {
                try
                {
                    return new DirectoryInfo(outDir).GetFiles().Sum(f => f.Length);
                }
                catch (FileNotFoundException)
                {
                }
            }
        }
    }

    [Theory]
    [InlineData(1L << 30)]  // one file
    [InlineData(3_000_000)] // a shard every few tensors
    [InlineData(1)]         // every tensor its own shard
    public void Merge_ReadsNoFurtherAheadOfTheWriterThanItsBudget_WhateverTheSharding(long maxShardBytes)
    {
        using var tmp = new TempDir();
        string baseDir = StreamedConvertTests.MakeModel(tmp.File("base"), DType.F32);
        string adapterDir = StreamedConvertTests.MakeAdapter(tmp.File("adapter"), baseDir, 8);
        string outDir = tmp.File("out");
        Directory.CreateDirectory(outDir);
        using var baseWeights = new TrackingSource(WeightSource.Open(baseDir), outDir);
        using var adapter = WeightSource.Open(adapterDir, PeftAdapter.WeightsFile);
        var sizes = baseWeights.Names.Select(n => 4 * baseWeights.Shape(n).Aggregate(1L, (a, d) => a * d)).ToList();
        long largest = sizes.Max(), budget = 2 * largest;
        var summary = Merge.MergeWeights(baseWeights, adapter, PeftAdapter.ReadConfig(adapterDir), outDir, maxShardBytes, DType.F32, budget);
        Assert.Equal(baseWeights.Names.Count, baseWeights.Reads); // each base tensor read exactly once
        // Read but not on disk: the tensors in flight (within the budget, A and B counted too), the one being written, and
        // the writer's 1 MiB buffer. (With no budget this run reads ~15 MB ahead.)
        long bound = budget + largest + (1 << 20);
        Assert.True(baseWeights.MaxAhead <= bound, $"reading ran {baseWeights.MaxAhead} bytes ahead of writing (bound {bound}, all {sizes.Sum()})");
        Assert.True(bound < sizes.Sum() / 2);
        Assert.Equal(14, summary.MergedModules.Count);
        if (maxShardBytes == 1) Assert.Equal(baseWeights.Names.Count + 1, summary.Files.Count);
    }

    [Fact]
    public void BadAdapter_FailsWithoutTouchingTheOutputFolder()
    {
        using var tmp = new TempDir();
        string outDir = tmp.File("merged");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "keep.txt"), "old");
        // An adapter whose module is not in target_modules.
        string adapterDir = tmp.File("adapter");
        Directory.CreateDirectory(adapterDir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Tiny("llama"), "adapter", PeftAdapter.ConfigFile)))!.AsObject();
        cfg["target_modules"] = new JsonArray("q_proj");
        File.WriteAllText(Path.Combine(adapterDir, PeftAdapter.ConfigFile), cfg.ToJsonString());
        File.Copy(Path.Combine(Tiny("llama"), "adapter", PeftAdapter.WeightsFile), Path.Combine(adapterDir, PeftAdapter.WeightsFile));

        var e = Assert.Throws<InvalidDataException>(() => Merge.Run(Tiny("llama"), adapterDir, outDir, 1L << 30, DType.F32));
        Assert.Contains("is not in target_modules [q_proj]", e.Message);
        Assert.Equal(["keep.txt"], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName));
        Assert.Equal(["adapter", "merged"], Directory.GetFileSystemEntries(tmp.Path).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void ExistingOutput_IsReplacedWhole_AndTokenizerAndRemoteCodeAreCopied()
    {
        using var tmp = new TempDir();
        string baseDir = tmp.File("base");
        Directory.CreateDirectory(baseDir);
        foreach (var f in Directory.GetFiles(Tiny("internlm2"))) File.Copy(f, Path.Combine(baseDir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(baseDir, "tokenizer_config.json"), "{}");
        File.WriteAllText(Path.Combine(baseDir, "tokenizer.model"), "sp");
        File.WriteAllText(Path.Combine(baseDir, "modeling_internlm2.py"), "# remote code");
        string outDir = tmp.File("out");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "model-00001-of-00009.safetensors"), "stale");

        Merge.Run(baseDir, Path.Combine(Tiny("internlm2"), "adapter"), outDir, 1L << 30, DType.BF16);
        Assert.Equal(["config.json", "model.safetensors", "modeling_internlm2.py", "tokenizer.model", "tokenizer_config.json"],
            Directory.GetFiles(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.NotNull(config["auto_map"]);
        Assert.Equal("bfloat16", (string?)config["torch_dtype"]);
        Assert.Throws<ArgumentException>(() => Merge.Run(baseDir, Path.Combine(Tiny("internlm2"), "adapter"), baseDir, 1L << 30, DType.F32));
    }
}
