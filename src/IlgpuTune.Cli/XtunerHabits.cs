namespace IlgpuTune.Cli;

/// <summary>What XTuner users type that means something else here, answered with a clear line instead of silence.</summary>
internal static class XtunerHabits
{
    /// <summary>
    /// XTuner starts torchrun when NPROC_PER_NODE > 1 and takes --launcher pytorch|slurm|mpi; one process on one GPU is what
    /// ilgpu-tune does until multi-GPU training lands, so both say so instead of silently training on one GPU.
    /// </summary>
    public static void SingleProcessOnly(string launcher)
    {
        if (launcher != "none")
            throw new ArgumentException($"--launcher {launcher}: multi-GPU training is not there yet; ilgpu-tune trains in one process on one GPU (leave --launcher out)");
        string? nproc = Environment.GetEnvironmentVariable("NPROC_PER_NODE");
        if (nproc is not null && (!int.TryParse(nproc, out int n) || n > 1))
            throw new ArgumentException($"NPROC_PER_NODE={nproc}: multi-GPU training is not there yet; ilgpu-tune trains in one process on one GPU (unset NPROC_PER_NODE or set it to 1)");
    }
}
