// A PTX entry's name and parameter layout, read from the PTX text: what a launch must pass, byte for byte. ILGPU writes
// every parameter as `.param .align A .b8 name[S]` (structs and views) or `.param .TYPE name` (scalars).
using System.Globalization;
using System.Text.RegularExpressions;

namespace IlgpuTune.Driver;

/// <summary>One kernel parameter: its size and alignment in bytes.</summary>
public readonly record struct PtxParameter(int Size, int Alignment)
{
    public override string ToString() => $"{Size}@{Alignment}";

    public static PtxParameter Parse(string text)
    {
        var at = text.Split('@');
        if (at.Length != 2 || !int.TryParse(at[0], CultureInfo.InvariantCulture, out int size) ||
            !int.TryParse(at[1], CultureInfo.InvariantCulture, out int align) || size <= 0 || align <= 0 || (align & (align - 1)) != 0)
            throw new FormatException($"PTX parameter '{text}': expected SIZE@ALIGN (bytes, the alignment a power of two)");
        return new(size, align);
    }
}

/// <summary>The entry function of a PTX module and its parameters in order.</summary>
/// <remarks>StaticShared: bytes of the module's .shared arrays; DynamicShared: it declares the extern dynamic array.</remarks>
public sealed partial record PtxSignature(string Entry, IReadOnlyList<PtxParameter> Parameters, int StaticShared, bool DynamicShared)
{
    /// <summary>Reads the single <c>.entry</c> of <paramref name="ptx"/>.</summary>
    public static PtxSignature Parse(string ptx)
    {
        var entries = EntryHead().Matches(ptx);
        if (entries.Count != 1) throw new FormatException($"PTX module has {entries.Count} .entry functions; expected 1");
        var head = entries[0];
        int close = ptx.IndexOf(')', head.Index + head.Length);
        if (close < 0) throw new FormatException($"PTX entry {head.Groups[1].Value}: parameter list not closed");
        var parameters = new List<PtxParameter>();
        foreach (var text in ptx[(head.Index + head.Length)..close].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (ArrayParam().Match(text) is { Success: true } a)
                parameters.Add(new(int.Parse(a.Groups[2].Value, CultureInfo.InvariantCulture), int.Parse(a.Groups[1].Value, CultureInfo.InvariantCulture)));
            else if (ScalarParam().Match(text) is { Success: true } s)
            {
                int size = int.Parse(s.Groups[1].Value, CultureInfo.InvariantCulture) / 8;
                parameters.Add(new(size, size));
            }
            else throw new FormatException($"PTX entry {head.Groups[1].Value}: unrecognised parameter '{text}'");
        }
        int staticShared = SharedArray().Matches(ptx).Sum(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        return new(head.Groups[1].Value, parameters, staticShared, ptx.Contains(".extern .shared", StringComparison.Ordinal));
    }

    [GeneratedRegex(@"\.entry\s+([\w$]+)\s*\(")]
    private static partial Regex EntryHead();

    [GeneratedRegex(@"^\s*\.shared\s+\.align\s+\d+\s+\.b8\s+[\w$]+\[(\d+)\]", RegexOptions.Multiline)]
    private static partial Regex SharedArray();

    [GeneratedRegex(@"^\.param\s+\.align\s+(\d+)\s+\.b8\s+[\w$]+\[(\d+)\]$")]
    private static partial Regex ArrayParam();

    [GeneratedRegex(@"^\.param\s+\.[subf](8|16|32|64)\s+[\w$]+$")]
    private static partial Regex ScalarParam();
}
