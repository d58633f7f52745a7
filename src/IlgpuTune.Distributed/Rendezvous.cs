// How the ranks of a job meet before NCCL can connect them: rank 0 listens on MASTER_PORT, every other rank connects to
// MASTER_ADDR:MASTER_PORT and says who it is, and once all have come rank 0 sends each the payload (NCCL's unique id, made
// by rank 0 alone). Peers retry until rank 0 listens; everything is bounded by a timeout, so a rank that never comes
// ends the wait with an error naming it, never a hang.
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace IlgpuTune.Distributed;

public static class Rendezvous
{
    private const uint Magic = 0x494C4754; // "ILGT"

    /// <summary>Rank 0: makes the payload and hands it to every rank. Other ranks: receive it from rank 0.</summary>
    public static byte[] Exchange(LaunchEnv env, Func<byte[]> makeOnRankZero, TimeSpan timeout)
    {
        if (env.WorldSize == 1) return makeOnRankZero();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            return env.Rank == 0 ? Serve(env, makeOnRankZero(), cts.Token) : Join(env, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new IOException($"rendezvous at {env.MasterAddr}:{env.MasterPort}: rank {env.Rank} of {env.WorldSize} waited " +
                $"{timeout.TotalSeconds:F0} s for {(env.Rank == 0 ? "the other ranks" : "rank 0")}; check MASTER_ADDR / MASTER_PORT and that every rank started");
        }
    }

    private static byte[] Serve(LaunchEnv env, byte[] payload, CancellationToken token)
    {
        using var listener = new TcpListener(IPAddress.Any, env.MasterPort);
        try
        {
            listener.Start(env.WorldSize);
        }
        catch (SocketException e)
        {
            throw new IOException($"rendezvous: rank 0 cannot listen on port {env.MasterPort} ({e.Message}); set MASTER_PORT to a free port", e);
        }
        var peers = new TcpClient?[env.WorldSize];
        try
        {
            for (int joined = 1; joined < env.WorldSize;)
            {
                var client = listener.AcceptTcpClientAsync(token).AsTask().GetAwaiter().GetResult();
                var stream = client.GetStream();
                ReadHello(stream, token, out uint magic, out int rank, out int world);
                if (magic != Magic || world != env.WorldSize || rank <= 0 || rank >= env.WorldSize || peers[rank] is not null)
                {
                    client.Dispose(); // not one of ours, or a duplicate: ignore it
                    continue;
                }
                peers[rank] = client;
                joined++;
            }
            var message = new byte[4 + payload.Length];
            BinaryPrimitives.WriteInt32LittleEndian(message, payload.Length);
            payload.CopyTo(message, 4);
            foreach (var peer in peers.OfType<TcpClient>()) peer.GetStream().Write(message);
            return payload;
        }
        finally
        {
            foreach (var peer in peers) peer?.Dispose();
        }
    }

    private static void ReadHello(NetworkStream stream, CancellationToken token, out uint magic, out int rank, out int world)
    {
        var hello = new byte[12];
        stream.ReadExactlyAsync(hello, token).AsTask().GetAwaiter().GetResult();
        magic = BinaryPrimitives.ReadUInt32LittleEndian(hello);
        rank = BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(4));
        world = BinaryPrimitives.ReadInt32LittleEndian(hello.AsSpan(8));
    }

    private static byte[] Join(LaunchEnv env, CancellationToken token)
    {
        while (true)
        {
            token.ThrowIfCancellationRequested();
            using var client = new TcpClient();
            try
            {
                client.ConnectAsync(env.MasterAddr, env.MasterPort, token).AsTask().GetAwaiter().GetResult();
            }
            catch (SocketException)
            {
                Task.Delay(100, token).GetAwaiter().GetResult(); // rank 0 is not listening yet
                continue;
            }
            var stream = client.GetStream();
            var hello = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(hello, Magic);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(4), env.Rank);
            BinaryPrimitives.WriteInt32LittleEndian(hello.AsSpan(8), env.WorldSize);
            stream.Write(hello);
            var length = new byte[4];
            try
            {
                stream.ReadExactlyAsync(length, token).AsTask().GetAwaiter().GetResult();
            }
            catch (EndOfStreamException)
            {
                throw new IOException($"rendezvous: rank 0 at {env.MasterAddr}:{env.MasterPort} closed the connection (it failed, or another job holds the port)");
            }
            int n = BinaryPrimitives.ReadInt32LittleEndian(length);
            if (n is < 0 or > 1 << 20) throw new IOException($"rendezvous: rank 0 sent a payload of {n} bytes; another program holds port {env.MasterPort}?");
            var payload = new byte[n];
            stream.ReadExactlyAsync(payload, token).AsTask().GetAwaiter().GetResult();
            return payload;
        }
    }
}
