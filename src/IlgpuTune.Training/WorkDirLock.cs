// One run owns a work dir: work_dir/.lock open exclusively (an flock on Unix, a share mode on Windows) for the run's life,
// released by the OS when the process ends, however it ends. work_dir/.lock.pid names the owner so a refused run can say who.
using System.Globalization;

namespace IlgpuTune.Training;

public sealed class WorkDirLock : IDisposable
{
    public const string FileName = ".lock";
    private readonly FileStream _file;

    private WorkDirLock(FileStream file) => _file = file;

    /// <summary>Takes the lock of <paramref name="workDir"/> (created if needed), or throws naming the PID that holds it.</summary>
    public static WorkDirLock Acquire(string workDir)
    {
        string path = Path.Combine(workDir, FileName), pidPath = path + ".pid";
        FileStream file;
        try
        {
            Directory.CreateDirectory(workDir);
            file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new InvalidOperationException($"work dir {workDir} is not writable ({e.Message})", e);
        }
        catch (IOException) when (File.Exists(path))
        {
            string owner = "";
            try
            {
                owner = File.ReadAllText(pidPath).Trim();
            }
            catch (IOException)
            {
                // the owner is still writing it
            }
            throw new InvalidOperationException($"work dir {workDir} is in use by another train run (PID {(owner.Length > 0 ? owner : "unknown")}); " +
                "wait for it to end, stop it, or pass another --work-dir");
        }
        try
        {
            IlgpuTune.Numerics.AtomicFile.WriteAllText(pidPath, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        catch
        {
            file.Dispose();
            throw;
        }
        return new WorkDirLock(file);
    }

    public void Dispose() => _file.Dispose();
}
