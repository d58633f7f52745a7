using System.Text.Json;

namespace IlgpuTune.Cli;

/// <summary>Checks of what a verb's arguments name, with messages in the user's terms (options, folders they passed).</summary>
internal static class CliPaths
{
    /// <summary>A checkpoint folder (work_dir/iter_N), or an error saying what was passed instead.</summary>
    public static string Checkpoint(string dir)
    {
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException(File.Exists(dir) ? $"{dir} is a file; pass a checkpoint folder like WORK_DIR/iter_N"
                : $"checkpoint folder {dir} does not exist");
        if (File.Exists(Path.Combine(dir, "state.json"))) return dir;
        var inside = IlgpuTune.Training.Checkpoint.List(dir);
        throw new InvalidDataException(inside.Count > 0
            ? $"{dir} is a work dir; pass one of its checkpoints, e.g. {inside[^1].Dir}"
            : $"{dir} is not a training checkpoint (no state.json); pass a checkpoint folder like WORK_DIR/iter_N");
    }

    /// <summary>A size option ("2GB", "500MiB") in bytes.</summary>
    public static long Size(string option, string value)
    {
        try
        {
            long bytes = IlgpuTune.IO.SafetensorsWriter.ParseSize(value);
            return bytes > 0 ? bytes : throw new FormatException("must be positive");
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new ArgumentException($"--{option} '{value}': expected a positive size with a unit, e.g. 2GB, 500MB or 1GiB", e);
        }
    }

    /// <summary>JSON text the user gave (a file or an option value), its syntax errors named by <paramref name="source"/>.</summary>
    public static JsonDocument ParseJson(string text, string source)
    {
        try
        {
            return JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}", e);
        }
    }
}
