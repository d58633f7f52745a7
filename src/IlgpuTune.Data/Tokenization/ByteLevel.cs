namespace IlgpuTune.Data.Tokenization;

/// <summary>GPT-2 byte-to-unicode table: printable Latin-1 bytes map to themselves, the 68 others to U+0100+n.</summary>
public static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildTable();
    static readonly Dictionary<char, byte> CharToByteMap = BuildInverse();

    static char[] BuildTable()
    {
        var t = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            t[b] = printable ? (char)b : (char)(256 + n++);
        }
        return t;
    }

    static Dictionary<char, byte> BuildInverse()
    {
        var d = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) d[ByteToChar[b]] = (byte)b;
        return d;
    }

    public static bool TryCharToByte(char c, out byte b) => CharToByteMap.TryGetValue(c, out b);

    /// <summary>UTF-8 bytes of <paramref name="s"/>, each written as its byte-level character.</summary>
    public static string Encode(ReadOnlySpan<char> s)
    {
        int n = System.Text.Encoding.UTF8.GetByteCount(s);
        Span<byte> bytes = n <= 1024 ? stackalloc byte[n] : new byte[n];
        System.Text.Encoding.UTF8.GetBytes(s, bytes);
        return string.Create(n, bytes.ToArray(), static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
        });
    }
}
