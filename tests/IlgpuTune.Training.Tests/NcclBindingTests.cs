using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using IlgpuTune.Distributed;
using IlgpuTune.TestKit;

namespace IlgpuTune.Training.Tests;

/// <summary>The NCCL binding without a GPU: nccl.h's layouts and values, where libnccl.so.2 is looked for, the error when it is missing.</summary>
public class NcclBindingTests
{
    [Fact]
    public void UniqueId_Is128BytesPassedByValue()
    {
        Assert.Equal(128, Unsafe.SizeOf<NcclUniqueId>());
        Assert.Equal(128, Marshal.SizeOf<NcclUniqueId>());
        var bytes = Enumerable.Range(0, 128).Select(i => (byte)(i * 7)).ToArray();
        Assert.Equal(bytes, NcclUniqueId.FromBytes(bytes).ToArray());
        Assert.Throws<ArgumentException>(() => NcclUniqueId.FromBytes(new byte[127]));
    }

    [Fact]
    public void Enums_AreNcclHs()
    {
        Assert.Equal(7, (int)NcclDataType.Float32);
        Assert.Equal(9, (int)NcclDataType.Bfloat16);
        Assert.Equal(6, (int)NcclDataType.Float16);
        Assert.Equal(0, (int)NcclRedOp.Sum);
        Assert.Equal(4, (int)NcclRedOp.Avg);
        Assert.Equal(NcclRedOp.Avg, NcclCommunicator.Op(ReduceOp.Avg));
        Assert.Equal(NcclRedOp.Sum, NcclCommunicator.Op(ReduceOp.Sum));
        Assert.Equal(6, (int)NcclResult.RemoteError);
        Assert.Equal("2.23.4", Nccl.VersionText(22304));
        Assert.Equal("2.8.3", Nccl.VersionText(2803));
    }

    [Fact]
    public void Candidates_FollowTheDocumentedOrder()
    {
        var env = new Dictionary<string, string>
        {
            ["NCCL_LIBRARY"] = "/opt/nccl/lib", ["LD_LIBRARY_PATH"] = "/a:/b/", ["VIRTUAL_ENV"] = "/venv", ["HOME"] = "/home/u",
        };
        var dirs = new Dictionary<string, string[]>
        {
            ["/venv/lib"] = ["/venv/lib/python3.11", "/venv/lib/pkgconfig"],
            ["/home/u/.local/lib"] = ["/home/u/.local/lib/python3.12"],
        };
        var list = NcclLibrary.Candidates(k => env.GetValueOrDefault(k), d => dirs.GetValueOrDefault(d) ?? []);
        Assert.Equal("/opt/nccl/lib/libnccl.so.2", list[0]);
        Assert.Equal("/a/libnccl.so.2", list[1]);
        Assert.Equal("/b/libnccl.so.2", list[2]);
        Assert.Equal("libnccl.so.2", list[3]); // the system's search (ld.so.cache)
        Assert.Equal("/venv/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2", list[4]);
        Assert.Contains("/home/u/.local/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2", list);
        Assert.DoesNotContain(list, c => c.Contains("pkgconfig"));
        // A virtualenv on PATH, not activated (the device machines' /opt/torch/.venv): the folder above its bin/.
        env.Remove("VIRTUAL_ENV");
        env["PATH"] = "/opt/torch/.venv/bin:/usr/bin:/bin";
        dirs["/opt/torch/.venv/lib"] = ["/opt/torch/.venv/lib/python3.12"];
        Assert.Contains("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2",
            NcclLibrary.Candidates(k => env.GetValueOrDefault(k), d => dirs.GetValueOrDefault(d) ?? []));
        // A file named directly is taken as is.
        env["NCCL_LIBRARY"] = "/x/libnccl.so.2.21.5";
        Assert.Equal("/x/libnccl.so.2.21.5", NcclLibrary.Candidates(k => env.GetValueOrDefault(k), _ => [])[0]);
    }

    [Fact]
    public void Missing_SaysHowToInstall()
    {
        string message = NcclLibrary.NotFoundMessage(["/a/libnccl.so.2", "libnccl.so.2"], null);
        Assert.Contains("pip install nvidia-nccl-cu12", message);
        Assert.Contains("NCCL_LIBRARY", message);
        Assert.Contains("/a/libnccl.so.2", message);
        Assert.StartsWith("NCCL_LIBRARY=/nope: no loadable", NcclLibrary.NotFoundMessage(["/nope/libnccl.so.2"], "/nope"));
    }

    [Fact]
    public void Describe_NamesTheFailure() =>
        Assert.Contains("remote process exited", Nccl.Describe(NcclResult.RemoteError));
}

/// <summary>The launcher's environment (torchrun, slurm) and the TCP rendezvous that hands rank 0's NCCL id to every rank.</summary>
public class LaunchTests
{
    private static Func<string, string?> Env(params (string, string)[] vars) => k => vars.FirstOrDefault(v => v.Item1 == k).Item2;

    [Fact]
    public void Torchrun_Environment()
    {
        var e = LaunchEnv.From("none", Env(("RANK", "5"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "8"), ("LOCAL_WORLD_SIZE", "4"),
            ("MASTER_ADDR", "10.0.0.2"), ("MASTER_PORT", "29600")));
        Assert.Equal(new LaunchEnv(5, 1, 8, 4, "10.0.0.2", 29600), e);
        Assert.Equal(LaunchEnv.Single, LaunchEnv.From("none", Env()));
        Assert.Contains("MASTER_ADDR", Assert.Throws<ArgumentException>(() => LaunchEnv.From("pytorch", Env(("RANK", "1"), ("WORLD_SIZE", "2")))).Message);
        Assert.Contains("RANK=2", Assert.Throws<ArgumentException>(() => LaunchEnv.From("pytorch", Env(("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")))).Message);
        Assert.Contains("WORLD_SIZE=two", Assert.Throws<ArgumentException>(() => LaunchEnv.From("pytorch", Env(("WORLD_SIZE", "two")))).Message);
    }

    [Fact]
    public void Slurm_Environment()
    {
        var e = LaunchEnv.From("slurm", Env(("SLURM_PROCID", "3"), ("SLURM_LOCALID", "1"), ("SLURM_NTASKS", "4"), ("SLURM_NTASKS_PER_NODE", "2(x2)"),
            ("SLURM_NODELIST", "gpu[07-08]")));
        Assert.Equal(new LaunchEnv(3, 1, 4, 2, "gpu07", LaunchEnv.DefaultPort), e);
        Assert.Equal("node7", LaunchEnv.FirstNode("node7,node8"));
        Assert.Equal("a12", LaunchEnv.FirstNode("a[12,15-16],b3"));
        Assert.Equal("solo", LaunchEnv.FirstNode("solo"));
        Assert.Contains("SLURM_NODELIST", Assert.Throws<ArgumentException>(() => LaunchEnv.From("slurm", Env(("SLURM_NTASKS", "2")))).Message);
    }

    [Fact]
    public void Rendezvous_HandsRankZerosPayloadToEveryRank()
    {
        int port = FreePort();
        var payload = Enumerable.Range(0, NcclUniqueId.Bytes).Select(i => (byte)i).ToArray();
        var results = new byte[3][];
        var threads = Enumerable.Range(0, 3).Select(rank => new Thread(() =>
            results[rank] = Rendezvous.Exchange(new LaunchEnv(rank, rank, 3, 3, "127.0.0.1", port),
                () => rank == 0 ? payload : throw new InvalidOperationException("only rank 0 makes the id"), TimeSpan.FromSeconds(20)))).ToList();
        // The other ranks start first: they retry until rank 0 listens.
        threads[2].Start();
        threads[1].Start();
        Thread.Sleep(200);
        threads[0].Start();
        threads.ForEach(t => t.Join());
        Assert.All(results, r => Assert.Equal(payload, r));
    }

    [Fact]
    public void Rendezvous_TimesOutWithAClearMessage()
    {
        var e = Assert.Throws<IOException>(() =>
            Rendezvous.Exchange(new LaunchEnv(1, 1, 2, 2, "127.0.0.1", FreePort()), () => [], TimeSpan.FromMilliseconds(600)));
        Assert.Contains("rank 1 of 2 waited", e.Message);
        Assert.Contains("MASTER_PORT", e.Message);
    }

    private static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        int port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }
}
