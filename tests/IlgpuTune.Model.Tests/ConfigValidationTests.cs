using System.Text.Json.Nodes;
using IlgpuTune.TestKit;

namespace IlgpuTune.Model.Tests;

/// <summary>
/// config.json values issue 13's fuzzing found mishandled end in one InvalidDataException naming the file and the key
/// (a zero head count was a DivideByZeroException, eos_token_id [null] a NullReferenceException, duplicate keys and lone
/// surrogates raw exceptions without the file), and `convert quantize` checks the config against the weights before it
/// writes anything.
/// </summary>
public class ConfigValidationTests
{
    static string Tiny => File.ReadAllText(Path.Combine(Repo.Fixture("tiny/llama"), "config.json"));

    static InvalidDataException Bad(string json, string expected)
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "config.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<InvalidDataException>(() => ModelConfig.Load(tmp.Path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
        return e;
    }

    static string With(string key, string value)
    {
        var o = JsonNode.Parse(Tiny)!.AsObject();
        o[key] = JsonNode.Parse(value);
        return o.ToJsonString();
    }

    static string Without(params string[] keys)
    {
        var o = JsonNode.Parse(Tiny)!.AsObject();
        foreach (var k in keys) o.Remove(k);
        return o.ToJsonString();
    }

    [Theory]
    [InlineData("num_attention_heads", "0", "key 'num_attention_heads' is 0, expected a positive integer")]
    [InlineData("num_key_value_heads", "-2", "key 'num_key_value_heads' is -2")]
    [InlineData("hidden_size", "-1", "key 'hidden_size' is -1")]
    [InlineData("vocab_size", "0", "key 'vocab_size' is 0")]
    [InlineData("vocab_size", "2000000000", "key 'vocab_size' is 2000000000, expected a positive integer up to 16,777,216")]
    [InlineData("intermediate_size", "0", "key 'intermediate_size' is 0")]
    [InlineData("num_hidden_layers", "1000000000", "key 'num_hidden_layers' is 1000000000")]
    [InlineData("max_position_embeddings", "0", "key 'max_position_embeddings' is 0")]
    [InlineData("head_dim", "0", "key 'head_dim' is 0")]
    [InlineData("head_dim", "15", "head_dim 15 must be even")]
    [InlineData("num_key_value_heads", "3", "not a multiple of num_key_value_heads 3")]
    [InlineData("rms_norm_eps", "-1e-6", "rms_norm_eps")]
    [InlineData("eos_token_id", "[null]", "key 'eos_token_id' item 0 is null, expected a token id")]
    [InlineData("eos_token_id", "[2, \"x\"]", "key 'eos_token_id' item 1")]
    [InlineData("eos_token_id", "{\"a\": 1}", "key 'eos_token_id'")]
    [InlineData("eos_token_id", "1.5", "key 'eos_token_id' is 1.5")]
    [InlineData("architectures", "[5]", "key 'architectures'")]
    [InlineData("hidden_size", "1e40", "key 'hidden_size'")]
    public void BadValuesNameTheKey(string key, string value, string expected) => Bad(With(key, value), expected);

    [Fact]
    public void HeadCountZeroWithoutHeadDimIsNotADivisionByZero()
    {
        var o = JsonNode.Parse(Without("head_dim"))!.AsObject();
        o["num_attention_heads"] = 0;
        Bad(o.ToJsonString(), "key 'num_attention_heads' is 0");
        o["num_attention_heads"] = 5;
        o["num_key_value_heads"] = 5;
        Bad(o.ToJsonString(), "hidden_size 64 is not divisible by num_attention_heads 5");
    }

    [Fact]
    public void DuplicateKeysAndInvalidUtf16AreNamed()
    {
        Bad(Tiny.Replace("\"vocab_size\": 128", "\"vocab_size\": 128, \"vocab_size\": 129"), "duplicate key 'vocab_size'");
        Bad(Tiny.Replace("\"model_type\": \"llama\"", "\"model_type\": \"ll\\ud800ama\""), "key 'model_type' holds a string that is not valid UTF-16");
        Bad(Tiny.Replace("\"rope_type\": \"llama3\"", "\"rope_type\": \"llama3\", \"rope_type\": \"x\""), "duplicate key 'rope_parameters.rope_type'");
        Bad(Tiny[..100], "not valid JSON");
    }

    [Theory]
    [InlineData("hidden_size", "-1", "key 'hidden_size' is -1")]
    [InlineData("vocab_size", "2000000000", "key 'vocab_size' is 2000000000")]
    [InlineData("vocab_size", "129", "tensor 'model.embed_tokens.weight' has shape [128, 64], but config.json implies [129, 64]")]
    [InlineData("intermediate_size", "113", "has shape [112, 64], but config.json implies [113, 64]")]
    public void QuantizeValidatesBeforeWritingAnyOutput(string key, string value, string expected)
    {
        using var tmp = new TempDir();
        string model = Path.Combine(tmp.Path, "m"), output = Path.Combine(tmp.Path, "q");
        Directory.CreateDirectory(model);
        File.Copy(Path.Combine(Repo.Fixture("tiny/llama"), "model.safetensors"), Path.Combine(model, "model.safetensors"));
        File.WriteAllText(Path.Combine(model, "config.json"), With(key, value));
        var e = Assert.Throws<InvalidDataException>(() => QuantizedExport.Run(model, output, 1L << 30));
        Assert.Contains(expected, e.Message);
        Assert.False(Directory.Exists(output));
        Assert.Equal(["m"], Directory.GetFileSystemEntries(tmp.Path).Select(Path.GetFileName));   // no temp folder left either
    }
}
