using System.Buffers.Binary;

namespace IlgpuTune.Data.Datasets;

/// <summary>
/// Checks a parquet file's layout before Parquet.Net reads it: the PAR1 magic at both ends, a footer length inside the
/// file, and a footer (and each page header) that is well-formed Thrift compact protocol whose every list, map and string
/// fits in the bytes that are left. Parquet.Net's Thrift reader trusts those counts: a flipped bit in a 538-byte file's
/// footer made it spin on a two-billion-element list for minutes. Nothing here allocates by a count read from the file.
/// </summary>
static class ParquetFooter
{
    const int MaxDepth = 64;

    /// <summary>Returns the footer's offset and length, or throws InvalidDataException naming the file.</summary>
    public static (long Offset, int Length) Check(Stream s, string name)
    {
        long size = s.Length;
        if (size < 12) throw new InvalidDataException($"{name}: {size} bytes is too short for a parquet file");
        Span<byte> head = stackalloc byte[4], tail = stackalloc byte[8];
        s.Position = 0;
        s.ReadExactly(head);
        s.Position = size - 8;
        s.ReadExactly(tail);
        if (!head.SequenceEqual("PAR1"u8) || !tail[4..].SequenceEqual("PAR1"u8))
            throw new InvalidDataException($"{name}: not a parquet file (no PAR1 magic at its start and end)");
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(tail);
        if (length == 0 || length > size - 12)
            throw new InvalidDataException($"{name}: corrupt parquet footer (its length {length} does not fit in the file's {size} bytes)");
        var footer = new byte[length];
        s.Position = size - 8 - length;
        s.ReadExactly(footer);
        string? problem = Walk(footer, out int used);
        if (problem is not null) throw new InvalidDataException($"{name}: corrupt parquet footer ({problem})");
        if (used != footer.Length) throw new InvalidDataException($"{name}: corrupt parquet footer (the metadata ends {footer.Length - used} bytes early)");
        s.Position = 0;
        return (size - 8 - length, (int)length);
    }

    /// <summary>Walks one Thrift compact struct from the start of <paramref name="data"/>; null when well-formed.</summary>
    public static string? Walk(ReadOnlySpan<byte> data, out int used)
    {
        var r = new Reader(data);
        string? problem = r.Struct(0);
        used = r.Pos;
        return problem;
    }

    ref struct Reader(ReadOnlySpan<byte> data)
    {
        readonly ReadOnlySpan<byte> _d = data;
        public int Pos;

        int Left => _d.Length - Pos;

        public string? Struct(int depth)
        {
            if (depth > MaxDepth) return "nested too deeply";
            while (true)
            {
                if (Left < 1) return "truncated";
                byte h = _d[Pos++];
                int type = h & 0x0F;
                if (type == 0) return null;   // STOP
                if (h >> 4 == 0 && (Varint(out _) is { } e)) return e;   // long-form field id
                if (Value(type, depth, inList: false) is { } p) return p;
            }
        }

        string? Value(int type, int depth, bool inList)
        {
            switch (type)
            {
                case 1 or 2:   // bool: in a struct the type carries it, in a list one byte
                    if (!inList) return null;
                    if (Left < 1) return "truncated";
                    Pos++;
                    return null;
                case 3:
                    if (Left < 1) return "truncated";
                    Pos++;
                    return null;
                case 4 or 5 or 6: return Varint(out _);
                case 7:
                    if (Left < 8) return "truncated";
                    Pos += 8;
                    return null;
                case 8:
                    {
                        if (Varint(out ulong n) is { } e) return e;
                        if (n > (ulong)Left) return $"a {n}-byte string runs past the end";
                        Pos += (int)n;
                        return null;
                    }
                case 9 or 10:
                    {
                        if (Left < 1) return "truncated";
                        byte lh = _d[Pos++];
                        ulong n = (ulong)(lh >> 4);
                        if (n == 15 && Varint(out n) is { } e) return e;
                        int elem = lh & 0x0F;
                        if (elem is 0 or > 12) return $"list element type {elem}";
                        if (n > (ulong)Left) return $"a list of {n} elements in {Left} bytes";   // every element takes a byte or more
                        for (ulong i = 0; i < n; i++)
                            if (Value(elem, depth + 1, inList: true) is { } p) return p;
                        return null;
                    }
                case 11:
                    {
                        if (Varint(out ulong n) is { } e) return e;
                        if (n == 0) return null;
                        if (Left < 1) return "truncated";
                        byte kv = _d[Pos++];
                        int k = kv >> 4, v = kv & 0x0F;
                        if (k is 0 or > 12 || v is 0 or > 12) return $"map types {k}/{v}";
                        if (n > (ulong)Left) return $"a map of {n} entries in {Left} bytes";
                        for (ulong i = 0; i < n; i++)
                            if ((Value(k, depth + 1, inList: true) ?? Value(v, depth + 1, inList: true)) is { } p) return p;
                        return null;
                    }
                case 12: return Struct(depth + 1);
                default: return $"field type {type}";
            }
        }

        string? Varint(out ulong v)
        {
            v = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (Left < 1) return "truncated";
                byte b = _d[Pos++];
                v |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return null;
            }
            return "a varint longer than 10 bytes";
        }
    }
}
