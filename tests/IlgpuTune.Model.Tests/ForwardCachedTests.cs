using IlgpuTune.Core;
using IlgpuTune.Model.Generation;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>KV-cache decoding gives the uncached forward's logits at every position (tiny fixtures with their LoRA adapters).</summary>
// One ILGPU emulator test at a time: each runs a thread per simulated GPU thread, and two together thrash the CPU.
[Collection("ILGPU emulator")]
public class ForwardCachedTests
{
    static readonly int[] Ids = [1, 17, 99, 3, 64, 127, 0, 42, 42, 5, 88];

    [Theory]
    [InlineData("llama")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("internlm2")]
    [InlineData("qwen3")]
    [InlineData("internlm")]
    [InlineData("phi3")]
    [InlineData("gemma3_text")]
    [InlineData("mistral_sw")] // 11 tokens past its window of 8
    [InlineData("mixtral")]
    [InlineData("qwen3_moe")]
    public void CpuPath_MatchesUncachedForward(string arch) => AssertMatches(arch, "cpu", Ids);

    // The emulator is slow: a shorter sequence, still a prefill, single steps and a multi-token chunk after a cached prefix.
    [Fact]
    public void IlgpuKernels_MatchUncachedForward_Qwen2() => AssertMatches("qwen2", "ilgpu-cpu", Ids[..6]);

    static void AssertMatches(string arch, string deviceKind, int[] ids)
    {
        using var device = Device.Create(deviceKind);
        string dir = Repo.Fixture("tiny/" + arch);
        using var model = ModelLoader.Load(dir, device);
        PeftAdapter.Load(Path.Combine(dir, "adapter"), model);
        int vocab = model.Config.VocabSize, seq = ids.Length;
        float[] expected;
        using (Tape.NoGrad())
        using (var logits = model.Forward(ids, 1, seq))
            expected = logits.ToFloatArray();

        // Whole prompt in one prefill.
        using (var cache = new KvCache(model.Config, device))
        using (var logits = model.ForwardCached(ids, cache, allPositions: true))
        {
            Assert.Equal(seq, cache.Length);
            Close.Assert($"{arch} prefill", expected, logits.ToFloatArray(), 1e-5, 1e-4);
        }

        // A 3-token prefill, one token at a time, then a 2-token chunk (a next chat turn); the cache starts too small to hold it.
        using (var cache = new KvCache(model.Config, device, capacity: 2))
        {
            var actual = new List<float>();
            for (int first = 0; first < seq;)
            {
                int count = first == 0 ? 3 : first + 2 == seq ? 2 : 1;
                using var logits = model.ForwardCached(ids[first..(first + count)], cache, allPositions: true);
                actual.AddRange(logits.ToFloatArray());
                first += count;
                Assert.Equal(first, cache.Length);
            }
            Close.Assert($"{arch} decode", expected, actual.ToArray(), 1e-5, 1e-4);
        }

        // Default: only the last token's logits.
        using (var cache = new KvCache(model.Config, device))
        using (var last = model.ForwardCached(ids, cache))
        {
            Assert.Equal(new[] { 1, vocab }, last.Shape);
            Close.Assert($"{arch} last", expected.AsSpan((seq - 1) * vocab, vocab), last.ToFloatArray(), 1e-5, 1e-4);
        }
    }

    [Fact]
    public void Truncate_ThenReplay_GivesSameLogits()
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), device);
        using var cache = new KvCache(model.Config, device);
        using var first = model.ForwardCached(Ids, cache);
        cache.Truncate(4);
        using var again = model.ForwardCached(Ids[4..], cache);
        Assert.Equal(first.ToFloatArray(), again.ToFloatArray());
    }

    [Fact]
    public void RejectsOutOfVocabularyIdsAndEmptyInput()
    {
        using var device = Device.Create("cpu");
        using var model = ModelLoader.Load(Repo.Fixture("tiny/llama"), device);
        using var cache = new KvCache(model.Config, device);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.ForwardCached([5, 128], cache));
        Assert.Throws<ArgumentException>(() => model.ForwardCached([], cache));
        Assert.Equal(0, cache.Length);
    }
}
