// Who this process is in a multi-process job, from the environment its launcher set: torchrun's (RANK, LOCAL_RANK,
// WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; also what `ilgpu-tune train --nproc N` sets for its children)
// or slurm's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NTASKS_PER_NODE, SLURM_NODELIST), as mmengine's
// init_dist reads them for --launcher pytorch / slurm. Slurm's master is MASTER_ADDR if set, else the first node of the
// job's node list (mmengine asks `scontrol show hostname`); the port is MASTER_PORT or 29500 in both.
namespace IlgpuTune.Distributed;

public sealed record LaunchEnv(int Rank, int LocalRank, int WorldSize, int LocalWorldSize, string MasterAddr, int MasterPort)
{
    public const int DefaultPort = 29500;

    public bool IsMultiProcess => WorldSize > 1;

    /// <summary>
    /// The job this process belongs to: <paramref name="launcher"/> "none" (torchrun's variables when present, else one
    /// process), "pytorch" (torchrun's, required) or "slurm" (slurm's, required). Throws ArgumentException naming the variable.
    /// </summary>
    public static LaunchEnv From(string launcher, Func<string, string?> env)
    {
        switch (launcher)
        {
            case "none":
                return env("WORLD_SIZE") is null && env("RANK") is null ? Single : Torchrun(env);
            case "pytorch":
                return Torchrun(env);
            case "slurm":
                return Slurm(env);
            default:
                throw new ArgumentException($"--launcher {launcher}: expected none, pytorch or slurm");
        }
    }

    public static LaunchEnv Single { get; } = new(0, 0, 1, 1, "127.0.0.1", DefaultPort);

    private static LaunchEnv Torchrun(Func<string, string?> env)
    {
        int world = Int(env, "WORLD_SIZE", 1);
        int rank = Int(env, "RANK", 0);
        int localRank = Int(env, "LOCAL_RANK", rank);
        int localWorld = Int(env, "LOCAL_WORLD_SIZE", world);
        return Check(new LaunchEnv(rank, localRank, world, localWorld, Master(env, world), Port(env)), "RANK", "LOCAL_RANK");
    }

    private static LaunchEnv Slurm(Func<string, string?> env)
    {
        int world = Int(env, "SLURM_NTASKS", 1);
        int rank = Int(env, "SLURM_PROCID", 0);
        int localRank = Int(env, "SLURM_LOCALID", 0);
        int localWorld = env("SLURM_NTASKS_PER_NODE") is { } perNode && int.TryParse(perNode.Split('(')[0], out int n) ? n : world;
        string addr = env("MASTER_ADDR") is { Length: > 0 } a ? a
            : env("SLURM_NODELIST") is { Length: > 0 } nodes ? FirstNode(nodes)
            : world > 1 ? throw new ArgumentException("--launcher slurm: neither MASTER_ADDR nor SLURM_NODELIST is set (run under srun)") : "127.0.0.1";
        return Check(new LaunchEnv(rank, localRank, world, localWorld, addr, Port(env)), "SLURM_PROCID", "SLURM_LOCALID");
    }

    /// <summary>The first host of a slurm node list: "gpu[03-05,9],cpu1" -> "gpu03", "node7,node8" -> "node7".</summary>
    public static string FirstNode(string nodeList)
    {
        string first = nodeList.Trim();
        int bracket = first.IndexOf('['), comma = first.IndexOf(',');
        if (comma >= 0 && (bracket < 0 || comma < bracket)) return first[..comma];
        if (bracket < 0) return first;
        int close = first.IndexOf(']', bracket);
        if (close < 0) throw new ArgumentException($"SLURM_NODELIST={nodeList}: unbalanced '['");
        string range = first[(bracket + 1)..close].Split(',')[0].Split('-')[0];
        return first[..bracket] + range;
    }

    private static string Master(Func<string, string?> env, int world) =>
        env("MASTER_ADDR") is { Length: > 0 } a ? a
        : world > 1 ? throw new ArgumentException("WORLD_SIZE > 1 but MASTER_ADDR is not set (launch with torchrun or `ilgpu-tune train --nproc N`)")
        : "127.0.0.1";

    private static int Port(Func<string, string?> env)
    {
        int port = Int(env, "MASTER_PORT", DefaultPort);
        return port is > 0 and < 65536 ? port : throw new ArgumentException($"MASTER_PORT={port}: expected a TCP port (1-65535)");
    }

    private static int Int(Func<string, string?> env, string name, int fallback)
    {
        string? text = env(name);
        if (string.IsNullOrEmpty(text)) return fallback;
        if (!int.TryParse(text, out int v) || v < 0) throw new ArgumentException($"{name}={text}: expected a whole number >= 0");
        return v;
    }

    private static LaunchEnv Check(LaunchEnv e, string rankName, string localName)
    {
        if (e.WorldSize < 1) throw new ArgumentException($"world size {e.WorldSize}: expected at least 1");
        if (e.Rank >= e.WorldSize) throw new ArgumentException($"{rankName}={e.Rank}: expected less than the world size {e.WorldSize}");
        if (e.LocalRank >= e.LocalWorldSize)
            throw new ArgumentException($"{localName}={e.LocalRank}: expected less than the processes per node {e.LocalWorldSize}");
        return e;
    }
}
