namespace IlgpuTune.Numerics;

/// <summary>Writes a whole directory atomically: it is filled as a temp sibling, then renamed into place, so readers see
/// either the old directory or the complete new one, and a failure leaves the target untouched.</summary>
public static class AtomicDirectory
{
    public static void Write(string directory, Action<string> fill)
    {
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        string parent = Path.GetDirectoryName(target) ?? throw new ArgumentException($"{directory} has no parent folder", nameof(directory));
        Directory.CreateDirectory(parent);
        string tmp = $"{target}.tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(tmp);
        try
        {
            fill(tmp);
            if (!Directory.Exists(target))
            {
                Directory.Move(tmp, target);
                return;
            }
            // Replace: move the old one aside (restored if the swap fails), swap in, then delete it.
            string old = $"{target}.old-{Guid.NewGuid():N}";
            Directory.Move(target, old);
            try
            {
                Directory.Move(tmp, target);
            }
            catch
            {
                Directory.Move(old, target);
                throw;
            }
            Directory.Delete(old, recursive: true);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
    }
}
