using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>tokenizer.json post_processor for a single sequence; applied only when special tokens are requested.</summary>
public abstract class PostProcessor
{
    public abstract List<int> Single(List<int> ids);

    public static PostProcessor? FromJson(JsonElement e, Func<string, int> tokenId)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = e.Str("type");
        switch (type)
        {
            case "ByteLevel":
                return null;   // only trims offsets
            case "Sequence":
                var items = e.Prop("processors").Array("processors").Select(p => FromJson(p, tokenId)).OfType<PostProcessor>().ToArray();
                return items.Length == 0 ? null : new SequencePostProcessor(items);
            case "TemplateProcessing":
                var special = new Dictionary<string, int[]>();
                foreach (var p in e.Prop("special_tokens").Object("special_tokens"))
                    special[p.Name] = p.Value.Prop("ids").Array("ids").Select(x => x.AsId($"special_tokens '{p.Name}'")).ToArray();
                var single = new List<int[]?>();
                foreach (var item in e.Prop("single").Array("single"))
                {
                    if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("SpecialToken", out var st))
                        single.Add(special.TryGetValue(st.Str("id"), out var ids) ? ids : throw new FormatException($"post_processor uses special token '{st.Str("id")}', which its special_tokens do not define"));
                    else if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("Sequence", out _)) single.Add(null);
                    else throw new FormatException($"TemplateProcessing item {JsonFields.Short(item)} is neither SpecialToken nor Sequence");
                }
                return new TemplatePostProcessor(single);
            case "RobertaProcessing":
            case "BertProcessing":
                int cls = Pair(e.Prop("cls"), "cls"), sep = Pair(e.Prop("sep"), "sep");
                return new TemplatePostProcessor([[cls], null, [sep]]);
            default:
                throw new NotSupportedException($"tokenizer.json post_processor type '{type}' is not supported");
        }
    }

    // Bert/Roberta's ["[CLS]", 101]: the id of a (token, id) pair.
    static int Pair(JsonElement e, string what) =>
        e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 ? e[1].AsId(what) : throw new FormatException($"\"{what}\" must be a [token, id] pair, got {JsonFields.Short(e)}");
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
