using Cocona;
using IlgpuTune.Data.Tokenization;
using IlgpuTune.IO;
using IlgpuTune.Model;

namespace IlgpuTune.Cli;

public sealed partial class ConvertCommands
{
    [Command("gguf", Description = "An HF model folder (with its tokenizer; --adapter merges a PEFT LoRA adapter on the fly) as one GGUF file " +
        "for llama.cpp / Ollama / LM Studio")]
    public int Gguf([Argument(Description = "model folder")] string model, [Argument(Description = "output .gguf file")] string output,
        [Option("adapter", Description = "PEFT LoRA adapter folder to merge")] string? adapter = null,
        [Option("outtype", Description = "f16, bf16, q8_0 or q4_0 (default f16)")] string outtype = "f16")
    {
        var type = GgufExport.ParseOutType(outtype);
        using var stop = new StopSignal();
        try
        {
            var summary = GgufConvert.Run(model, output, type, adapter, stop.Token);
            var counts = summary.Tensors.GroupBy(t => t.Type).Select(g => $"{g.Count()} {g.Key}");
            Console.WriteLine($"{summary.Architecture} -> {output} ({summary.Tensors.Count} tensors: {string.Join(", ", counts)}" +
                (adapter is null ? ")" : $"; LoRA merged into {summary.MergedModules.Count} modules)"));
            return 0;
        }
        catch (OperationCanceledException) when (stop.Received is { } signal)
        {
            Console.Error.WriteLine($"interrupted: {output} was not written");
            return Signals.ExitCode(signal);
        }
    }
}

/// <summary>The tokenizer (Data) and the weights (Model) of one folder as a GGUF file.</summary>
public static class GgufConvert
{
    public static GgufSummary Run(string model, string output, GgufOutType type, string? adapter = null, CancellationToken cancel = default)
    {
        if (Directory.Exists(output)) throw new ArgumentException($"{output} is a folder; expected the path of the .gguf file to write");
        var config = ModelConfig.Load(model);
        return GgufExport.Run(model, output, TokenizerMetadata(GgufVocab.FromDirectory(model, config.VocabSize)), type, adapter, cancel);
    }

    /// <summary>The tokenizer.ggml.* keys of <paramref name="v"/>.</summary>
    public static IReadOnlyList<KeyValuePair<string, GgufValue>> TokenizerMetadata(GgufVocab v)
    {
        var kv = new List<KeyValuePair<string, GgufValue>>
        {
            new("tokenizer.ggml.model", GgufValue.Str(v.Model)),
            new("tokenizer.ggml.pre", GgufValue.Str(v.Pre)),
            new("tokenizer.ggml.tokens", GgufValue.Strings(v.Tokens)),
        };
        if (v.Scores is not null) kv.Add(new("tokenizer.ggml.scores", GgufValue.Floats(v.Scores)));
        kv.Add(new("tokenizer.ggml.token_type", GgufValue.Ints(v.TokenTypes)));
        if (v.Merges is not null) kv.Add(new("tokenizer.ggml.merges", GgufValue.Strings(v.Merges)));
        foreach (var (key, id) in new[] { ("bos", v.BosTokenId), ("eos", v.EosTokenId), ("unknown", v.UnknownTokenId), ("padding", v.PadTokenId) })
            if (id is { } i) kv.Add(new($"tokenizer.ggml.{key}_token_id", GgufValue.U32(i)));
        kv.Add(new("tokenizer.ggml.add_bos_token", GgufValue.Bool(v.AddBosToken)));
        kv.Add(new("tokenizer.ggml.add_eos_token", GgufValue.Bool(v.AddEosToken)));
        if (v.ChatTemplate is not null) kv.Add(new("tokenizer.chat_template", GgufValue.Str(v.ChatTemplate)));
        return kv;
    }
}
