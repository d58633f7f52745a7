using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace IlgpuTune.Numerics;

/// <summary>Writes a whole directory atomically: it is filled as a temp sibling, then renamed into place, so readers see
/// either the old directory or the complete new one, and a failure leaves the target untouched. Temp siblings carry the
/// writer's PID (NAME.tmp-PID-GUID): leftovers of a killed writer are removed by the next write into the same folder.</summary>
public static partial class AtomicDirectory
{
    public static void Write(string directory, Action<string> fill)
    {
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        string parent = Path.GetDirectoryName(target) ?? throw new ArgumentException($"{directory} has no parent folder", nameof(directory));
        Directory.CreateDirectory(parent);
        RemoveLeftovers(parent, pid => !IsRunning(pid));
        string tmp = $"{target}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
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
            string old = $"{target}.old-{Environment.ProcessId}-{Guid.NewGuid():N}";
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

    /// <summary>
    /// Removes this process's temp siblings in the folder of <paramref name="directory"/> (a writer interrupted by Ctrl-C,
    /// with the fill possibly still running: retried for a moment) and puts back a directory moved aside by a swap.
    /// </summary>
    public static void RemoveOwn(string directory)
    {
        string parent = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)))!;
        for (int attempt = 0; attempt < 20; attempt++)
        {
            try
            {
                RemoveLeftovers(parent, pid => pid == Environment.ProcessId);
                return;
            }
            catch (IOException)
            {
                Thread.Sleep(50); // the writer created a file while the folder was being deleted
            }
        }
    }

    // Deletes NAME.tmp-PID-GUID folders of the PIDs selected; a NAME.old-PID-GUID is moved back to NAME when NAME is
    // missing (the writer died between the two renames of a swap), else deleted.
    private static void RemoveLeftovers(string parent, Func<int, bool> select)
    {
        foreach (var dir in Directory.GetDirectories(parent))
        {
            var m = Leftover().Match(Path.GetFileName(dir));
            if (!m.Success || !int.TryParse(m.Groups[3].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || !select(pid)) continue;
            string target = Path.Combine(parent, m.Groups[1].Value);
            if (m.Groups[2].Value == "old" && !Directory.Exists(target)) Directory.Move(dir, target);
            else Directory.Delete(dir, recursive: true);
        }
    }

    private static bool IsRunning(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    [GeneratedRegex(@"^(.+)\.(tmp|old)-(\d+)-([0-9a-f]{32})$")]
    private static partial Regex Leftover();
}
