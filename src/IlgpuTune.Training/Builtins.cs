// Configs and assets shipped inside the binary: `list-cfg`, `copy-cfg`, `train <name>`, and the "@tiny" model + data.
using System.Reflection;
using System.Security.Cryptography;

namespace IlgpuTune.Training;

public static class Builtins
{
    public const string TinyPrefix = "@tiny";
    public const string DefaultConfig = "tiny_llama_lora_colorist_e3";

    private static Assembly Asm => typeof(Builtins).Assembly;

    public static IReadOnlyList<string> ConfigNames =>
        Asm.GetManifestResourceNames().Where(n => n.StartsWith("configs/", StringComparison.Ordinal))
            .Select(n => Path.GetFileNameWithoutExtension(n["configs/".Length..])).Order(StringComparer.Ordinal).ToList();

    public static string ConfigText(string name)
    {
        using var s = Asm.GetManifestResourceStream($"configs/{name}.yaml")
            ?? throw new ConfigException($"no built-in config '{name}'; `ilgpu-tune list-cfg` lists them");
        return new StreamReader(s).ReadToEnd();
    }

    /// <summary>A config file path, or the name of a built-in config.</summary>
    public static TrainConfig LoadConfig(string pathOrName, IEnumerable<string>? overrides = null)
    {
        var cfg = File.Exists(pathOrName) && pathOrName.EndsWith(".py", StringComparison.OrdinalIgnoreCase) ? Configs.XtunerPyConfig.Load(pathOrName, overrides)
            : File.Exists(pathOrName) ? TrainConfig.Load(pathOrName, overrides)
            : ConfigNames.Contains(pathOrName) ? TrainConfig.Parse(ConfigText(pathOrName), pathOrName + ".yaml", overrides)
            : throw new ConfigException($"{pathOrName}: no such config file, and no built-in config of that name (`ilgpu-tune list-cfg`)");
        cfg.PretrainedModelNameOrPath = ResolveAsset(cfg.PretrainedModelNameOrPath);
        cfg.Tokenizer = cfg.Tokenizer is null ? null : ResolveAsset(cfg.Tokenizer);
        cfg.DataPath = cfg.DataPath.Select(ResolveAsset).ToList();
        return cfg;
    }

    /// <summary>"@tiny[/file]" -> the embedded tiny assets, unpacked once into a cache folder keyed by their content.</summary>
    public static string ResolveAsset(string path)
    {
        if (!path.StartsWith(TinyPrefix, StringComparison.Ordinal)) return path;
        string rest = path[TinyPrefix.Length..].TrimStart('/');
        var names = Asm.GetManifestResourceNames().Where(n => n.StartsWith("tiny/", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var n in names)
        {
            using var s = Asm.GetManifestResourceStream(n)!;
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes(n));
            hash.AppendData(SHA256.HashData(s));
        }
        string root = Environment.GetEnvironmentVariable("ILGPUTUNE_CACHE")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "ilgpu-tune");
        string dir = Path.Combine(root, "tiny-" + Convert.ToHexString(hash.GetHashAndReset())[..12].ToLowerInvariant());
        if (!Directory.Exists(dir))
        {
            string tmp = dir + ".tmp-" + Guid.NewGuid().ToString("N");
            Directory.CreateDirectory(tmp);
            foreach (var n in names)
            {
                using var s = Asm.GetManifestResourceStream(n)!;
                using var f = File.Create(Path.Combine(tmp, n["tiny/".Length..]));
                s.CopyTo(f);
            }
            try
            {
                Directory.Move(tmp, dir);
            }
            catch (IOException) when (Directory.Exists(dir))
            {
                Directory.Delete(tmp, recursive: true); // another process unpacked it first
            }
        }
        return rest.Length == 0 ? dir : Path.Combine(dir, rest);
    }
}
