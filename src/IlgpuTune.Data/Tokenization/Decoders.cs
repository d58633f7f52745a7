using System.Text;
using System.Text.Json;

namespace IlgpuTune.Data.Tokenization;

/// <summary>A tokenizer.json decoder, as tokenizers' decode_chain: a list of token strings to a list of strings.</summary>
public abstract class TokenDecoder
{
    public abstract List<string> DecodeChain(List<string> tokens);

    public static TokenDecoder? FromJson(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = e.Str("type");
        return type switch
        {
            "Sequence" => new SequenceDecoder(e.Prop("decoders").Array("decoders").Select(FromJson).OfType<TokenDecoder>().ToArray()),
            "ByteLevel" => new ByteLevelDecoder(),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Replace" => new ReplaceDecoder(Pattern.FromJson(e.Prop("pattern")), e.Str("content")),
            "Strip" => new StripDecoder(e.Prop("content").AsChar("content"), e.Prop("start").AsInt("start"), e.Prop("stop").AsInt("stop")),
            "Metaspace" => MetaspaceDecoder.Create(e),
            _ => throw new NotSupportedException($"tokenizer.json decoder type '{type}' is not supported"),
        };
    }
}

sealed class SequenceDecoder(TokenDecoder[] items) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var d in items) tokens = d.DecodeChain(tokens);
        return tokens;
    }
}

// All tokens back to bytes, then lossy UTF-8; a token with a character outside the byte alphabet passes as its own UTF-8.
sealed class ByteLevelDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens)
        {
            int mark = bytes.Count;
            bool ok = true;
            foreach (char c in t)
            {
                if (!ByteLevel.TryCharToByte(c, out byte b))
                {
                    ok = false;
                    break;
                }
                bytes.Add(b);
            }
            if (!ok)
            {
                bytes.RemoveRange(mark, bytes.Count - mark);
                bytes.AddRange(Encoding.UTF8.GetBytes(t));
            }
        }
        return [Encoding.UTF8.GetString(bytes.ToArray())];
    }
}

// Runs of <0xXX> tokens become their UTF-8 text, or one U+FFFD per byte when invalid.
sealed class ByteFallbackDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var outp = new List<string>(tokens.Count);
        var pending = new List<byte>();
        void Flush()
        {
            if (pending.Count == 0) return;
            try
            {
                outp.Add(new UTF8Encoding(false, true).GetString(pending.ToArray()));
            }
            catch (DecoderFallbackException)
            {
                for (int i = 0; i < pending.Count; i++) outp.Add("\uFFFD");
            }
            pending.Clear();
        }
        foreach (var t in tokens)
        {
            if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>' &&
                byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                pending.Add(b);
                continue;
            }
            Flush();
            outp.Add(t);
        }
        Flush();
        return outp;
    }
}

sealed class FuseDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

sealed class ReplaceDecoder(Pattern pattern, string content) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(t => pattern.Replace(t, content)).ToList();
}

// Per token: removes up to `start` leading and `stop` trailing `content` characters.
sealed class StripDecoder(char content, int start, int stop) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(t =>
    {
        int a = 0, b = t.Length;
        while (a < start && a < b && t[a] == content) a++;
        while (t.Length - b < stop && b > a && t[b - 1] == content) b--;
        return t[a..b];
    }).ToList();
}

sealed class MetaspaceDecoder(char replacement, bool stripFirst) : TokenDecoder
{
    public static MetaspaceDecoder Create(JsonElement e)
    {
        char rep = (e.TryGetProperty("replacement", out var r) ? r : e.Prop("str_rep")).AsChar("replacement");
        string scheme = e.TryGetProperty("prepend_scheme", out var ps) ? ps.AsString("prepend_scheme")
            : TextNormalizer.Bool(e, "add_prefix_space", true) ? "always" : "never";
        return new MetaspaceDecoder(rep, scheme != "never");
    }

    public override List<string> DecodeChain(List<string> tokens)
    {
        var outp = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i].Replace(replacement, ' ');
            if (i == 0 && stripFirst && t.StartsWith(' ')) t = t[1..];
            outp.Add(t);
        }
        return outp;
    }
}
