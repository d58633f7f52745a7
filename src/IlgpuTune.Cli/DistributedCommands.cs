// `ilgpu-tune nccl-test`: checks a multi-GPU setup before a long run, as nccl-tests' all_reduce_perf does for PyTorch
// users: every rank runs each collective of the trainer on its GPU through NCCL, checks the numbers, and times an
// all-reduce. Launched like `train` (--nproc / NPROC_PER_NODE, torchrun, srun --launcher slurm).
using System.Diagnostics;
using Cocona;
using IlgpuTune.Core;
using IlgpuTune.Distributed;
using IlgpuTune.Numerics;

namespace IlgpuTune.Cli;

[FriendlyErrors]
public sealed class DistributedCommands
{
    [Command("nccl-test", Description = "Check NCCL on this machine's GPUs: all-reduce (sum, avg), reduce-scatter, all-gather and broadcast " +
        "checked on every rank, and an all-reduce timed (bus bandwidth). Launch as train: --nproc N, NPROC_PER_NODE, torchrun or srun --launcher slurm")]
    public int NcclTest(
        [Option("nproc", Description = "processes on this node, one per GPU")] int? nproc = null,
        [Option("launcher", Description = "none, pytorch (under torchrun) or slurm (under srun)")] string launcher = "none",
        [Option("size-mb", Description = "MiB of fp32 in the timed all-reduce")] int sizeMb = 64)
    {
        if (sizeMb < 1) throw new ArgumentException($"--size-mb {sizeMb}: expected at least 1");
        if (DistributedLaunch.RunRanksIfAsked(nproc, launcher) is { } code) return code;
        var env = LaunchEnv.From(launcher, Environment.GetEnvironmentVariable);
        NcclLibrary.EnsureLoaded();
        var id = Rendezvous.Exchange(env, () => Nccl.NewUniqueId().ToArray(), TimeSpan.FromMinutes(5));
        using var device = Device.Create("cuda", env.LocalRank);
        using var comm = new NcclCommunicator(NcclUniqueId.FromBytes(id), env.Rank, env.WorldSize);
        int n = env.WorldSize, r = env.Rank, chunk = 1000;
        float Sum(Func<int, float> f) => Enumerable.Range(0, n).Sum(f);

        using var buffer = Tensor.FromArray(device, Enumerable.Repeat(r + 1f, chunk * n).ToArray(), chunk * n);
        comm.AllReduce(buffer, ReduceOp.Sum);
        Check("all_reduce sum", buffer.ToFloatArray(), _ => Sum(k => k + 1));
        buffer.CopyFrom(Enumerable.Repeat(r + 1f, chunk * n).ToArray());
        comm.AllReduce(buffer, ReduceOp.Avg);
        Check("all_reduce avg", buffer.ToFloatArray(), _ => Sum(k => k + 1) / n);
        // Element i of rank k is k * i: the reduced chunk of rank r holds sum_k k * (r * chunk + j).
        buffer.CopyFrom(Enumerable.Range(0, chunk * n).Select(i => (float)(r * i % 4096)).ToArray());
        using var part = Tensor.Empty(device, DType.F32, chunk);
        comm.GroupStart();
        comm.ReduceScatter(buffer, part, ReduceOp.Sum);
        comm.GroupEnd();
        Check("reduce_scatter", part.ToFloatArray(), j => Sum(k => k * (r * chunk + j) % 4096));
        using var mine = Tensor.FromArray(device, Enumerable.Range(0, chunk).Select(j => (float)(r * chunk + j)).ToArray(), chunk);
        comm.AllGather(mine, buffer);
        Check("all_gather", buffer.ToFloatArray(), i => i);
        using var root = Tensor.FromArray(device, Enumerable.Repeat(r == 0 ? 42f : -1f, chunk).ToArray(), chunk);
        comm.Broadcast(root, 0);
        Check("broadcast", root.ToFloatArray(), _ => 42f);

        int elements = sizeMb * (1 << 20) / 4;
        using var big = Tensor.Zeros(device, DType.F32, elements);
        comm.AllReduce(big, ReduceOp.Sum); // warm-up: NCCL connects its channels on first use
        device.Synchronize();
        const int repeats = 10;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) comm.AllReduce(big, ReduceOp.Sum);
        device.Synchronize();
        double seconds = clock.Elapsed.TotalSeconds / repeats;
        double busGBs = 2.0 * (n - 1) / n * elements * 4 / seconds / 1e9; // nccl-tests' bus bandwidth for all-reduce
        if (r == 0)
            Console.WriteLine($"NCCL {Nccl.VersionText(Nccl.Version)} ({NcclLibrary.LoadedFrom}), {n} rank(s): all-reduce sum/avg, reduce-scatter, " +
                $"all-gather, broadcast correct; all-reduce of {sizeMb} MiB {seconds * 1e3:F2} ms, bus bandwidth {busGBs:F1} GB/s");
        return 0;

        void Check(string op, float[] got, Func<int, float> want)
        {
            for (int i = 0; i < got.Length; i++)
                if (got[i] != want(i))
                    throw new InvalidOperationException($"nccl-test: rank {r}: {op} gave {got[i]} at element {i}, expected {want(i)}");
        }
    }
}
