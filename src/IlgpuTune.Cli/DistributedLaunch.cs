// Training on several GPUs, launched the ways XTuner users launch it:
//   NPROC_PER_NODE=N ilgpu-tune train CFG   or   ilgpu-tune train CFG --nproc N
//       this process becomes the launcher: it starts N copies of the same command, one per GPU, with torchrun's variables
//       (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; XTuner's NNODES / NODE_RANK / ADDR / PORT
//       for several nodes), waits, and when one rank fails stops the others and exits with its code;
//   torchrun ... / srun ... ilgpu-tune train CFG --launcher slurm
//       each process is a rank already (LaunchEnv reads the variables).
// In a rank, rank 0 makes NCCL's unique id and hands it to the others over TCP (Rendezvous), and the trainer gets an
// NCCL communicator on the rank's GPU (LOCAL_RANK). NCCL needs NVIDIA GPUs: without one a rank stops with that message.
using System.Diagnostics;
using IlgpuTune.Distributed;

namespace IlgpuTune.Cli;

internal static class DistributedLaunch
{
    private static readonly TimeSpan s_rendezvousTimeout = TimeSpan.FromMinutes(5);

    /// <summary>Processes per node asked for by --nproc or NPROC_PER_NODE (1 when neither), checked.</summary>
    public static int ProcessesPerNode(int? nproc)
    {
        if (nproc is { } n) return n >= 1 ? n : throw new ArgumentException($"--nproc {n}: expected at least 1 (one process per GPU)");
        string? env = Environment.GetEnvironmentVariable("NPROC_PER_NODE");
        if (string.IsNullOrEmpty(env)) return 1;
        return int.TryParse(env, out int v) && v >= 1 ? v : throw new ArgumentException($"NPROC_PER_NODE={env}: expected a whole number >= 1 (processes per node, one per GPU)");
    }

    /// <summary>
    /// The launcher's part: when this process should start ranks (more than one per node asked for and not itself a rank),
    /// runs them and returns the exit code; null when this process trains itself.
    /// </summary>
    public static int? RunRanksIfAsked(int? nproc, string launcher)
    {
        int perNode = ProcessesPerNode(nproc);
        if (perNode == 1 || launcher != "none" || Environment.GetEnvironmentVariable("RANK") is not null) return null;
        int nodes = EnvInt("NNODES", 1), nodeRank = EnvInt("NODE_RANK", 0);
        if (nodeRank >= nodes) throw new ArgumentException($"NODE_RANK={nodeRank}: expected less than NNODES={nodes}");
        string addr = Environment.GetEnvironmentVariable("ADDR") ?? Environment.GetEnvironmentVariable("MASTER_ADDR") ?? "127.0.0.1";
        string port = Environment.GetEnvironmentVariable("PORT") ?? Environment.GetEnvironmentVariable("MASTER_PORT") ?? LaunchEnv.DefaultPort.ToString();
        var (program, args) = ChildCommand();
        var children = new List<Process>();
        using var signals = new Signals(_ => true); // Ctrl-C reaches the ranks too (same process group): they save and stop
        try
        {
            for (int local = 0; local < perNode; local++)
            {
                var psi = new ProcessStartInfo(program) { UseShellExecute = false, RedirectStandardOutput = local > 0, RedirectStandardError = local > 0 };
                foreach (var a in args) psi.ArgumentList.Add(a);
                psi.Environment["RANK"] = (nodeRank * perNode + local).ToString();
                psi.Environment["LOCAL_RANK"] = local.ToString();
                psi.Environment["WORLD_SIZE"] = (nodes * perNode).ToString();
                psi.Environment["LOCAL_WORLD_SIZE"] = perNode.ToString();
                psi.Environment["MASTER_ADDR"] = addr;
                psi.Environment["MASTER_PORT"] = port;
                psi.Environment.Remove("NPROC_PER_NODE");
                var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start rank {local}");
                children.Add(p);
                if (local > 0)
                {
                    // Only rank 0 talks; the others' errors come through with their rank.
                    int rank = local;
                    p.OutputDataReceived += (_, _) => { };
                    p.ErrorDataReceived += (_, e) => { if (e.Data is { Length: > 0 } line) Console.Error.WriteLine($"[rank {rank}] {line}"); };
                    p.BeginOutputReadLine();
                    p.BeginErrorReadLine();
                }
            }
            return Wait(children);
        }
        finally
        {
            foreach (var p in children)
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                p.WaitForExit();
                p.Dispose();
            }
        }
    }

    // The first rank to fail stops the others; the job's code is that rank's (0 when all succeed).
    private static int Wait(List<Process> children)
    {
        var pending = children.Select((p, i) => (Task: p.WaitForExitAsync(), Rank: i)).ToList();
        while (pending.Count > 0)
        {
            int done = Task.WaitAny([.. pending.Select(x => x.Task)]);
            var (_, rank) = pending[done];
            pending.RemoveAt(done);
            int code = children[rank].ExitCode;
            if (code != 0)
            {
                foreach (var (_, other) in pending)
                    if (!children[other].HasExited) children[other].Kill(entireProcessTree: true);
                Console.Error.WriteLine($"error: rank {rank} exited with code {code}; the other ranks were stopped");
                return code;
            }
        }
        return 0;
    }

    // This command again, without --nproc: `dotnet ilgpu-tune.dll train ...` or the apphost `ilgpu-tune train ...`.
    private static (string Program, List<string> Args) ChildCommand()
    {
        var argv = Environment.GetCommandLineArgs();
        var rest = new List<string>();
        for (int i = 1; i < argv.Length; i++)
        {
            if (argv[i] == "--nproc") { i++; continue; }
            if (argv[i].StartsWith("--nproc=", StringComparison.Ordinal)) continue;
            rest.Add(argv[i]);
        }
        string process = Environment.ProcessPath ?? "dotnet";
        bool host = Path.GetFileNameWithoutExtension(process) == "dotnet";
        return host ? (process, [argv[0], .. rest]) : (process, rest);
    }

    private static int EnvInt(string name, int fallback)
    {
        string? text = Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(text)) return fallback;
        return int.TryParse(text, out int v) && v >= 0 ? v : throw new ArgumentException($"{name}={text}: expected a whole number >= 0");
    }

    /// <summary>A rank's part: who it is and, in a job of several processes, its NCCL communicator (null alone).</summary>
    public static (LaunchEnv Env, ICommunicator? Communicator) JoinRanks(string launcher)
    {
        var env = LaunchEnv.From(launcher, Environment.GetEnvironmentVariable);
        if (!env.IsMultiProcess) return (env, null);
        NcclLibrary.EnsureLoaded(); // every rank fails at once, with the install hint, when NCCL is missing
        var id = Rendezvous.Exchange(env, () => Nccl.NewUniqueId().ToArray(), s_rendezvousTimeout);
        return (env, new NcclCommunicator(NcclUniqueId.FromBytes(id), env.Rank, env.WorldSize));
    }
}
