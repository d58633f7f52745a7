using System.Text;
using IlgpuTune.Data.Tokenization;

namespace IlgpuTune.Data.Tests;

/// <summary>Ids and decodes equal HF tokenizers 0.23 (expected-ids.json, made by tools/tokenizers/make_expected_ids.py).</summary>
public class TokenizerParityTests
{
    static readonly string[] Corpus = Fixtures.Json("tokenizer-corpus.json").EnumerateArray().Select(e => e.GetString()!).ToArray();

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    [InlineData("llama2")]
    public void IdsAndDecodeMatchHfTokenizers(string name)
    {
        var tok = RealTokenizers.Get(name);
        var rows = Fixtures.Json("expected-ids.json").GetProperty("tokenizers").GetProperty(name).GetProperty("rows");
        var failures = new StringBuilder();
        int checkedRows = 0;
        foreach (var row in rows.EnumerateArray())
        {
            int i = row.GetProperty("index").GetInt32();
            string text = Corpus[i];
            Check(failures, i, "ids", Fixtures.Ints(row.GetProperty("ids")), tok.Encode(text), tok);
            Check(failures, i, "ids_with_special", Fixtures.Ints(row.GetProperty("ids_with_special")), tok.Encode(text, addSpecialTokens: true), tok);
            var ids = Fixtures.Ints(row.GetProperty("ids"));
            Check(failures, i, "decoded", row.GetProperty("decoded").GetString()!, tok.Decode(ids));
            Check(failures, i, "decoded_skip_special", row.GetProperty("decoded_skip_special").GetString()!, tok.Decode(ids, skipSpecialTokens: true));
            checkedRows++;
        }
        Assert.Equal(Corpus.Length, checkedRows);
        Assert.True(failures.Length == 0, failures.ToString());
    }

    static void Check(StringBuilder f, int i, string what, int[] expected, int[] actual, HfTokenizer tok)
    {
        if (expected.AsSpan().SequenceEqual(actual)) return;
        string Show(int[] ids) => string.Join(" ", ids.Select(id => $"{id}:{tok.IdToToken(id)}"));
        f.AppendLine($"corpus[{i}] {what}\n  expected {Show(expected)}\n  actual   {Show(actual)}");
    }

    static void Check(StringBuilder f, int i, string what, string expected, string actual)
    {
        if (expected == actual) return;
        f.AppendLine($"corpus[{i}] {what}\n  expected {Escape(expected)}\n  actual   {Escape(actual)}");
    }

    static string Escape(string s) => System.Text.Json.JsonSerializer.Serialize(s);
}
