using System.Text;
using IlgpuTune.Model.Generation;

namespace IlgpuTune.Model.Tests;

/// <summary>Each logits processor on hand-made logits (HF semantics), the draw, and the streaming detokenizer.</summary>
public class SamplingTests
{
    static readonly float NegInf = float.NegativeInfinity;

    [Fact]
    public void RepetitionPenalty_DividesPositiveMultipliesNegative_OncePerToken()
    {
        float[] logits = [2f, -2f, 0.5f, 1f, 0f];
        Sampling.ApplyRepetitionPenalty(logits, [0, 1, 0, 4, 0], 2f);
        Assert.Equal([1f, -4f, 0.5f, 1f, 0f], logits);
    }

    [Fact]
    public void Temperature_Divides()
    {
        float[] logits = [2f, -1f];
        Sampling.ApplyTemperature(logits, 0.5f);
        Assert.Equal([4f, -2f], logits);
    }

    [Fact]
    public void TopK_KeepsTheKLargestAndTiesWithTheKth()
    {
        float[] a = [1f, 3f, 3f, 2f, 0f];
        Sampling.ApplyTopK(a, 2);
        Assert.Equal([NegInf, 3f, 3f, NegInf, NegInf], a);
        float[] b = [1f, 3f, 2f, 2f, 0f];
        Sampling.ApplyTopK(b, 2);
        Assert.Equal([NegInf, 3f, 2f, 2f, NegInf], b);
        float[] c = [1f, 2f];
        Sampling.ApplyTopK(c, 0);
        Assert.Equal([1f, 2f], c);
    }

    [Fact]
    public void TopP_DropsTheTailWhoseMassStaysBelowOneMinusP()
    {
        float[] Probs() => [MathF.Log(0.3f), MathF.Log(0.05f), MathF.Log(0.5f), MathF.Log(0.15f)];
        var a = Probs();
        Sampling.ApplyTopP(a, 0.7f); // tail 0.05 + 0.15 = 0.2 <= 0.3 goes; adding 0.3 would pass 0.3
        Assert.Equal(new[] { false, true, false, true }, a.Select(float.IsNegativeInfinity));
        var b = Probs();
        Sampling.ApplyTopP(b, 0.9f);
        Assert.Equal(new[] { false, true, false, false }, b.Select(float.IsNegativeInfinity));
        var c = Probs();
        Sampling.ApplyTopP(c, 0.01f); // the most likely token always stays
        Assert.Equal(new[] { true, true, false, true }, c.Select(float.IsNegativeInfinity));
    }

    [Fact]
    public void Greedy_IsArgmaxAfterThePenalty()
    {
        var options = new GenerationOptions { RepetitionPenalty = 3f };
        Assert.Equal(1, Sampling.Next([1f, 3f, 2f], [], options, new Random(0)));
        Assert.Equal(2, Sampling.Next([1f, 3f, 2f], [1], options, new Random(0)));
        Assert.Equal(0, Sampling.Argmax([5f, 5f, 1f])); // first of equal maxima, as torch.argmax
    }

    [Fact]
    public void Sample_FollowsSoftmaxAndNeverPicksExcludedTokens()
    {
        float[] logits = [MathF.Log(0.6f), NegInf, MathF.Log(0.3f), MathF.Log(0.1f)];
        var rng = new Random(7);
        var counts = new int[4];
        const int n = 20000;
        for (int i = 0; i < n; i++) counts[Sampling.Sample(logits, rng)]++;
        Assert.Equal(0, counts[1]);
        Assert.InRange(counts[0] / (double)n, 0.58, 0.62);
        Assert.InRange(counts[2] / (double)n, 0.28, 0.32);
        Assert.InRange(counts[3] / (double)n, 0.09, 0.11);
    }

    [Fact]
    public void Sampling_IsDeterministicForASeed()
    {
        var options = new GenerationOptions { Temperature = 0.8f, TopK = 5, TopP = 0.9f, RepetitionPenalty = 1.1f };
        var logits = TestKit.Rand.Floats(3, 50, 3f);
        int[] Draw(int seed)
        {
            var rng = new Random(seed);
            return Enumerable.Range(0, 40).Select(_ => Sampling.Next(logits.ToArray(), [1, 2, 3], options, rng)).ToArray();
        }
        Assert.Equal(Draw(11), Draw(11));
        Assert.NotEqual(Draw(11), Draw(12));
        var penalized = logits.ToArray();
        Sampling.ApplyRepetitionPenalty(penalized, [1, 2, 3], 1.1f);
        Assert.All(Draw(11), id => Assert.Contains(id, TopIds(penalized, 5)));
    }

    static int[] TopIds(float[] logits, int k) =>
        logits.Select((x, i) => (x, i)).OrderByDescending(p => p.x).Take(k).Select(p => p.i).ToArray();

    [Fact]
    public void Options_RejectBadValues()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationOptions { TopP = 0 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationOptions { Temperature = -1 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationOptions { RepetitionPenalty = 0 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationOptions { MaxNewTokens = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new GenerationOptions { StopWords = [""] }.Validate());
    }

    // ---- streaming ----

    // Byte-level "tokenizer": token id = one UTF-8 byte; incomplete sequences decode to U+FFFD as HF's decode does.
    static string Utf8(IReadOnlyList<int> ids) => Encoding.UTF8.GetString(ids.Select(i => (byte)i).ToArray());

    static int[] Bytes(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();

    [Fact]
    public void Stream_ReleasesWholeCharactersOnly()
    {
        var stream = new TextStream(Utf8, []);
        var pieces = Bytes("hé😀!").Select(stream.Push).ToList();
        Assert.Equal(["h", "", "é", "", "", "", "😀", "!"], pieces);
        Assert.Equal("", stream.Flush());
        Assert.Equal("hé😀!", stream.Text);
    }

    [Fact]
    public void Stream_HoldsPossibleStopWordStartsAndCutsTheStopWord()
    {
        var stream = new TextStream(Utf8, ["###", "<eoa>"]);
        var pieces = Bytes("a#b##c<e").Select(stream.Push).ToList();
        Assert.Equal(["a", "", "#b", "", "", "##c", "", ""], pieces);
        Assert.Null(stream.StopWord);
        Assert.Equal("", stream.Push('o'));
        Assert.Equal("", stream.Push('a'));
        Assert.Equal("", stream.Push('>'));
        Assert.Equal("<eoa>", stream.StopWord);
        Assert.Equal("a#b##c", stream.Text);
        Assert.Equal("", stream.Flush());
    }

    [Fact]
    public void Stream_FlushReleasesAHeldTail()
    {
        var stream = new TextStream(Utf8, ["###"]);
        Assert.Equal("x", stream.Push('x'));
        Assert.Equal("", stream.Push('#'));
        Assert.Equal("#", stream.Flush());
        Assert.Equal("x#", stream.Text);
    }

    [Theory]
    [InlineData("abc###", "###", 3)]
    [InlineData("abc##\n#", "###", 3)] // XTuner drops \r and \n before matching
    [InlineData("ab<eoa>\r\n", "<eoa>", 2)]
    [InlineData("ab<eoa>x", "<eoa>", -1)]
    [InlineData("##", "###", -1)]
    public void StopWordStart_IgnoresLineBreaks(string text, string word, int expected) =>
        Assert.Equal(expected, TextStream.StopWordStart(text, word));
}
