using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace IlgpuTune.Fuzz;

/// <summary>What a target's inputs look like, for the format-aware mutations.</summary>
public enum InputKind { Binary, Text, Json, Safetensors }

/// <summary>
/// AFL/libFuzzer-style mutations, stacked 1-8 per child: bit and byte flips, boundary integers (binary and as decimal
/// text), range insert/delete/duplicate, truncation, splices with another corpus entry, the target's dictionary tokens,
/// and format-aware edits: a JSON value replaced by a boundary value, removed or nested deeply; a safetensors header
/// edited as JSON with its length prefix kept right.
/// </summary>
public sealed class Mutator(InputKind kind, IReadOnlyList<string> tokens, int maxLength = 1 << 20)
{
    static readonly long[] InterestingInts =
    [
        0, 1, -1, 2, 7, 8, 16, 63, 64, 127, 128, 255, 256, 1023, 1024, 4096, 32767, 32768, 65535, 65536, 100000, 100001,
        int.MaxValue, (long)int.MaxValue + 1, int.MinValue, uint.MaxValue, (long)uint.MaxValue + 1, long.MaxValue, long.MinValue, -2, -129,
    ];

    static readonly string[] InterestingJson =
    [
        "null", "true", "false", "0", "-1", "1", "2147483647", "2147483648", "-2147483649", "4294967296", "9223372036854775807",
        "18446744073709551616", "99999999999999999999999999", "1e308", "1e999", "-0.0", "0.5", "\"\"", "\"\\ud800\"", "\"\\udc00x\"",
        "\"\\u0000\"", "[]", "{}", "[null]", "[[]]", "{\"\":null}", "\"a\"", "[-1]", "[2147483647, -1]", "\"<|im_end|>\"",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];

    public byte[] Mutate(byte[] parent, IReadOnlyList<byte[]> corpus, Random rng)
    {
        byte[] data = parent;
        // One format-aware edit first (half of the time where the format allows), then 1-8 byte-level ones.
        if (kind is InputKind.Json && rng.Next(2) == 0) data = MutateJson(data, rng) ?? data;
        else if (kind is InputKind.Safetensors && rng.Next(2) == 0) data = MutateSafetensorsHeader(data, rng) ?? data;
        int stack = 1 << rng.Next(4);
        var buf = new List<byte>(data);
        for (int i = 0; i < stack; i++) MutateBytes(buf, corpus, rng);
        if (buf.Count > maxLength) buf.RemoveRange(maxLength, buf.Count - maxLength);
        return [.. buf];
    }

    void MutateBytes(List<byte> b, IReadOnlyList<byte[]> corpus, Random rng)
    {
        int op = rng.Next(b.Count == 0 ? 3 : 14);
        int Pos() => rng.Next(b.Count);
        switch (op)
        {
            case 0: // insert a dictionary token (or a random byte)
            case 1:
                {
                    byte[] t = tokens.Count > 0 && rng.Next(4) != 0 ? Encoding.UTF8.GetBytes(tokens[rng.Next(tokens.Count)]) : [(byte)rng.Next(256)];
                    b.InsertRange(b.Count == 0 ? 0 : rng.Next(b.Count + 1), t);
                    break;
                }
            case 2: // an interesting number as decimal text
                b.InsertRange(b.Count == 0 ? 0 : rng.Next(b.Count + 1), Encoding.ASCII.GetBytes(InterestingInts[rng.Next(InterestingInts.Length)].ToString()));
                break;
            case 3: // flip a bit
                {
                    int p = Pos();
                    b[p] ^= (byte)(1 << rng.Next(8));
                    break;
                }
            case 4: // set a byte
                b[Pos()] = (byte)(rng.Next(3) switch { 0 => 0, 1 => 0xff, _ => rng.Next(256) });
                break;
            case 5: // overwrite with a boundary integer, 1/2/4/8 bytes, either endianness
                {
                    int width = 1 << rng.Next(4);
                    if (b.Count < width) break;
                    int p = rng.Next(b.Count - width + 1);
                    Span<byte> v = stackalloc byte[8];
                    long x = InterestingInts[rng.Next(InterestingInts.Length)];
                    if (rng.Next(2) == 0) BinaryPrimitives.WriteInt64LittleEndian(v, x);
                    else BinaryPrimitives.WriteInt64BigEndian(v, x << (8 * (8 - width)));
                    for (int k = 0; k < width; k++) b[p + k] = v[k];
                    break;
                }
            case 6: // add or subtract a little
                {
                    int p = Pos();
                    b[p] = (byte)(b[p] + rng.Next(-16, 17));
                    break;
                }
            case 7: // delete a range
                {
                    int p = Pos(), n = Math.Min(b.Count - p, 1 + rng.Next(rng.Next(2) == 0 ? 4 : 64));
                    b.RemoveRange(p, n);
                    break;
                }
            case 8: // duplicate a range
                {
                    int p = Pos(), n = Math.Min(b.Count - p, 1 + rng.Next(64));
                    b.InsertRange(rng.Next(b.Count + 1), b.GetRange(p, n));
                    break;
                }
            case 9: // truncate
                {
                    int p = Pos();
                    b.RemoveRange(p, b.Count - p);
                    break;
                }
            case 10: // splice: our head with another entry's tail
                {
                    var other = corpus[rng.Next(corpus.Count)];
                    if (other.Length == 0) break;
                    int p = Pos(), q = rng.Next(other.Length);
                    b.RemoveRange(p, b.Count - p);
                    b.AddRange(other.AsSpan(q).ToArray());
                    break;
                }
            case 11: // replace a run of digits with a boundary number
                {
                    int p = Pos();
                    while (p < b.Count && !char.IsAsciiDigit((char)b[p])) p++;
                    if (p == b.Count) break;
                    int e = p;
                    while (e < b.Count && char.IsAsciiDigit((char)b[e])) e++;
                    b.RemoveRange(p, e - p);
                    b.InsertRange(p, Encoding.ASCII.GetBytes(InterestingInts[rng.Next(InterestingInts.Length)].ToString()));
                    break;
                }
            case 12: // repeat a range many times (deep nesting, long runs)
                {
                    int p = Pos(), n = Math.Min(b.Count - p, 1 + rng.Next(8));
                    var r = b.GetRange(p, n);
                    int times = 1 + rng.Next(rng.Next(2) == 0 ? 16 : 2000);
                    for (int k = 0; k < times && b.Count < maxLength; k++) b.InsertRange(p, r);
                    break;
                }
            default: // swap two bytes
                {
                    int p = Pos(), q = Pos();
                    (b[p], b[q]) = (b[q], b[p]);
                    break;
                }
        }
    }

    /// <summary>A JSON document with one value replaced, removed or wrapped; null when the input is not JSON we can edit.</summary>
    static byte[]? MutateJson(byte[] data, Random rng)
    {
        // JsonNode materialises lazily: invalid UTF-8/UTF-16 or duplicate keys surface anywhere below, not only in Parse.
        try
        {
            var root = JsonNode.Parse(data, documentOptions: new JsonDocumentOptions { MaxDepth = 256 });
            if (root is null) return null;
            var nodes = new List<JsonNode>();
            Collect(root, nodes);
            var target = nodes[rng.Next(nodes.Count)];
            string replacement = InterestingJson[rng.Next(InterestingJson.Length)];
            if (target == root) return Encoding.UTF8.GetBytes(replacement);
            var parent = target.Parent!;
            int op = rng.Next(4);
            if (parent is JsonObject o)
            {
                string key = target.GetPropertyName();
                if (op == 0) o.Remove(key);
                else if (op == 1) o[key] = new JsonArray(target.DeepClone());
                else o[key] = JsonNode.Parse(replacement);
            }
            else if (parent is JsonArray a)
            {
                int i = target.GetElementIndex();
                if (op == 0) a.RemoveAt(i);
                else if (op == 1) a.Insert(i, target.DeepClone());
                else a[i] = JsonNode.Parse(replacement);
            }
            return Encoding.UTF8.GetBytes(root.ToJsonString(new JsonSerializerOptions { WriteIndented = rng.Next(2) == 0 }));
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            return null;
        }
    }

    static void Collect(JsonNode node, List<JsonNode> into)
    {
        into.Add(node);
        if (node is JsonObject o)
            foreach (var (_, v) in o)
            {
                if (v is not null) Collect(v, into);
            }
        else if (node is JsonArray a)
            foreach (var v in a)
                if (v is not null) Collect(v, into);
    }

    /// <summary>The header edited as JSON (dtype, shape, data_offsets, names), the 8-byte length fixed to match.</summary>
    static byte[]? MutateSafetensorsHeader(byte[] data, Random rng)
    {
        if (data.Length < 8) return null;
        long n = BinaryPrimitives.ReadInt64LittleEndian(data);
        if (n <= 0 || n > data.Length - 8) return null;
        var header = MutateJson(data[8..(int)(8 + n)], rng);
        if (header is null) return null;
        var result = new byte[8 + header.Length + (data.Length - 8 - (int)n)];
        BinaryPrimitives.WriteInt64LittleEndian(result, header.Length);
        header.CopyTo(result, 8);
        data.AsSpan(8 + (int)n).CopyTo(result.AsSpan(8 + header.Length));
        return result;
    }
}
