// Precompiled PTX as an app carries it: manifest.tsv (one PtxEntry per kernel and architecture) and Brotli-compressed PTX
// texts, embedded as resources "ptx/manifest.tsv" and "ptx/<file>.ptx.br" of an assembly (IlgpuTune.Kernels.Ptx).
using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Text;

namespace IlgpuTune.Driver;

/// <summary>
/// One precompiled kernel: architecture folder ("sm_80"), kernel name, PTX file id, PTX entry name, the entry method's key,
/// whether ILGPU groups it implicitly (its first parameter is then the launch extent), target and passes as declared,
/// static shared bytes, whether it takes dynamic shared memory, and the parameter layout.
/// </summary>
public sealed record PtxEntry(string Architecture, string Name, string File, string Entry, string Method, bool ImplicitlyGrouped,
    string Target, string Passes, int StaticShared, bool DynamicShared, IReadOnlyList<PtxParameter> Parameters)
{
    public const string Header = "# arch\tname\tfile\tentry\tmethod\timplicit\ttarget\tpasses\tstatic_shared\tdynamic_shared\tparams";

    public string ToLine() => string.Join('\t', Architecture, Name, File, Entry, Method, ImplicitlyGrouped ? "1" : "0", Target, Passes,
        StaticShared.ToString(CultureInfo.InvariantCulture), DynamicShared ? "1" : "0", string.Join(',', Parameters));

    public static PtxEntry Parse(string line, int number)
    {
        var f = line.Split('\t');
        if (f.Length != 11 || f[5] is not ("0" or "1") || f[9] is not ("0" or "1") ||
            !int.TryParse(f[8], CultureInfo.InvariantCulture, out int shared))
            throw new InvalidDataException($"{PtxLibrary.ManifestName} line {number}: expected 11 tab-separated fields " +
                "(arch, name, file, entry, method, implicit 0/1, target, passes, static_shared, dynamic_shared 0/1, params)");
        try
        {
            return new(f[0], f[1], f[2], f[3], f[4], f[5] == "1", f[6], f[7], shared, f[9] == "1",
                f[10].Length == 0 ? [] : f[10].Split(',').Select(PtxParameter.Parse).ToArray());
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"{PtxLibrary.ManifestName} line {number}: {e.Message}", e);
        }
    }
}

/// <summary>The precompiled kernels of one assembly, looked up by architecture and kernel name; texts decompressed on demand.</summary>
public sealed class PtxLibrary
{
    public const string ManifestName = "manifest.tsv";
    private const string Prefix = "ptx/";

    private readonly Func<string, Stream?> _open;
    private readonly Dictionary<(string, string), PtxEntry> _entries = new();

    private PtxLibrary(Func<string, Stream?> open, string source)
    {
        _open = open;
        Source = source;
        using var manifest = open(Prefix + ManifestName)
            ?? throw new InvalidDataException($"{source} holds no precompiled PTX (resource {Prefix}{ManifestName} missing)");
        using var reader = new StreamReader(manifest, Encoding.UTF8);
        int number = 0;
        while (reader.ReadLine() is { } line)
        {
            number++;
            if (line.Length == 0 || line[0] == '#') continue;
            var entry = PtxEntry.Parse(line, number);
            if (!_entries.TryAdd((entry.Architecture, entry.Name), entry))
                throw new InvalidDataException($"{ManifestName} line {number}: kernel {entry.Name} listed twice for {entry.Architecture}");
        }
    }

    /// <summary>Where the PTX came from (for messages).</summary>
    public string Source { get; }

    public IEnumerable<PtxEntry> Entries => _entries.Values;

    /// <summary>The library embedded in <paramref name="assembly"/>.</summary>
    public static PtxLibrary FromAssembly(Assembly assembly) =>
        new(assembly.GetManifestResourceStream, $"assembly {assembly.GetName().Name}");

    /// <summary>A library laid out as files under <paramref name="folder"/> (the build step's output).</summary>
    public static PtxLibrary FromFolder(string folder) =>
        new(name => Path.Combine(folder, name["ptx/".Length..]) is var path && System.IO.File.Exists(path) ? System.IO.File.OpenRead(path) : null, folder);

    /// <summary>The entry of <paramref name="name"/> for <paramref name="architecture"/>, or null when not precompiled.</summary>
    public PtxEntry? Find(string architecture, string name) => _entries.GetValueOrDefault((architecture, name));

    /// <summary>The PTX text of <paramref name="entry"/>.</summary>
    public string Text(PtxEntry entry)
    {
        using var stream = _open($"{Prefix}ptx/{entry.File}.ptx.br")
            ?? throw new InvalidDataException($"{Source}: PTX file {entry.File} of kernel {entry.Name} ({entry.Architecture}) is missing");
        using var brotli = new BrotliStream(stream, CompressionMode.Decompress);
        using var reader = new StreamReader(brotli, Encoding.UTF8);
        return reader.ReadToEnd();
    }
}
