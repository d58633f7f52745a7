using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>tokenizer.json post_processor for a single sequence; applied only when special tokens are requested.</summary>
public abstract class PostProcessor
{
    public abstract List<int> Single(List<int> ids);

    public static PostProcessor? FromJson(JsonElement e, Func<string, int> tokenId)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = e.GetProperty("type").GetString()!;
        switch (type)
        {
            case "ByteLevel":
                return null;   // only trims offsets
            case "Sequence":
                var items = e.GetProperty("processors").EnumerateArray().Select(p => FromJson(p, tokenId)).OfType<PostProcessor>().ToArray();
                return items.Length == 0 ? null : new SequencePostProcessor(items);
            case "TemplateProcessing":
                var special = new Dictionary<string, int[]>();
                foreach (var p in e.GetProperty("special_tokens").EnumerateObject())
                    special[p.Name] = p.Value.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
                var single = new List<int[]?>();
                foreach (var item in e.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("SpecialToken", out var st)) single.Add(special[st.GetProperty("id").GetString()!]);
                    else if (item.TryGetProperty("Sequence", out _)) single.Add(null);
                    else throw new FormatException($"TemplateProcessing item {item} is neither SpecialToken nor Sequence");
                }
                return new TemplatePostProcessor(single);
            case "RobertaProcessing":
            case "BertProcessing":
                int cls = e.GetProperty("cls")[1].GetInt32(), sep = e.GetProperty("sep")[1].GetInt32();
                return new TemplatePostProcessor([[cls], null, [sep]]);
            default:
                throw new NotSupportedException($"tokenizer.json post_processor type '{type}' is not supported");
        }
    }
}

sealed class TemplatePostProcessor(List<int[]?> single) : PostProcessor
{
    public override List<int> Single(List<int> ids)
    {
        var outp = new List<int>(ids.Count + 4);
        foreach (var item in single)
        {
            if (item is null) outp.AddRange(ids);
            else outp.AddRange(item);
        }
        return outp;
    }
}

sealed class SequencePostProcessor(PostProcessor[] items) : PostProcessor
{
    public override List<int> Single(List<int> ids)
    {
        foreach (var p in items) ids = p.Single(ids);
        return ids;
    }
}
