// Collective operations between the ranks of one training job, as NCCL defines them: every rank calls the same
// operations in the same order with tensors of the same sizes. Tensors are F32 and live on the rank's device; the
// operations are ordered on the device's stream (NCCL) or complete before returning (in-process), so kernels launched
// afterwards see the result either way.
using IlgpuTune.Core;

namespace IlgpuTune.Distributed;

public enum ReduceOp
{
    Sum,
    /// <summary>The sum divided by the world size.</summary>
    Avg,
}

public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>buffer = op over ranks of buffer, in place.</summary>
    void AllReduce(Tensor buffer, ReduceOp op);

    /// <summary>input [WorldSize * n] on every rank; output [n] = op over ranks of input[Rank * n, (Rank + 1) * n).</summary>
    void ReduceScatter(Tensor input, Tensor output, ReduceOp op);

    /// <summary>input [n] on every rank; output [WorldSize * n] = the inputs of ranks 0, 1, ... one after another.</summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary>buffer = root's buffer on every rank.</summary>
    void Broadcast(Tensor buffer, int root);

    /// <summary>Operations between GroupStart and GroupEnd are launched together (ncclGroupStart/End); groups nest.</summary>
    void GroupStart();

    void GroupEnd();
}

/// <summary>Another rank failed: this rank stops with that rank's message.</summary>
public sealed class RankFailedException(int rank, string message, Exception? inner = null)
    : Exception($"rank {rank} failed: {message}", inner)
{
    public int FailedRank { get; } = rank;
}

internal static class CommChecks
{
    public static void F32(Tensor t, string what)
    {
        if (t.DType != Numerics.DType.F32) throw new ArgumentException($"{what}: collectives take F32 tensors, got {t.DType} ({t.Name})");
    }

    public static void Sizes(Tensor big, Tensor small, int world, string op)
    {
        if (big.Length != small.Length * world)
            throw new ArgumentException($"{op}: the large buffer has {big.Length} elements, expected world size {world} x {small.Length}");
    }
}
