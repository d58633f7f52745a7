// The communicator of ranks that are threads of one process, each with its own device (tests; the CPU stands in for
// GPUs). It is a real implementation of the collectives: every rank posts its buffer, a barrier waits for all, each
// rank reads what it needs, a second barrier frees the slots. Reductions add in rank order in fp32, so every rank gets
// bit-identical results (as NCCL's are on every rank). A rank that throws fails the world: ranks waiting in a
// collective, or reaching the next one, throw RankFailedException with its message instead of hanging.
using IlgpuTune.Core;

namespace IlgpuTune.Distributed;

public sealed class InProcessWorld : IDisposable
{
    private readonly Barrier _barrier;
    private readonly float[]?[] _slots;
    private readonly CancellationTokenSource _failed = new();
    private int _failedRank = -1;
    private string? _failure;

    public InProcessWorld(int worldSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(worldSize, 1);
        WorldSize = worldSize;
        _barrier = new Barrier(worldSize);
        _slots = new float[]?[worldSize];
    }

    public int WorldSize { get; }

    public ICommunicator Communicator(int rank)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, WorldSize);
        return new Comm(this, rank);
    }

    /// <summary>Marks the world failed by <paramref name="rank"/>: every other rank stops at its next (or current) collective.</summary>
    public void Fail(int rank, Exception error)
    {
        if (Interlocked.CompareExchange(ref _failedRank, rank, -1) == -1)
        {
            _failure = error.Message;
            _failed.Cancel();
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> on <paramref name="worldSize"/> threads, rank r with its own managed-CPU device, and returns
    /// the results by rank. When a rank throws, the others stop at their next collective and this throws the failed rank's
    /// exception wrapped in a RankFailedException.
    /// </summary>
    public static T[] Run<T>(int worldSize, Func<ICommunicator, Device, T> body, string deviceKind = "cpu")
    {
        using var world = new InProcessWorld(worldSize);
        var results = new T[worldSize];
        var errors = new Exception?[worldSize];
        var threads = Enumerable.Range(0, worldSize).Select(rank => new Thread(() =>
        {
            try
            {
                using var device = Device.Create(deviceKind);
                using var comm = world.Communicator(rank);
                results[rank] = body(comm, device);
            }
            catch (Exception e)
            {
                errors[rank] = e;
                world.Fail(rank, e);
            }
        }) { Name = $"rank {rank}", IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (world._failedRank >= 0)
        {
            int r = world._failedRank;
            throw errors[r] as RankFailedException ?? new RankFailedException(r, errors[r]!.Message, errors[r]);
        }
        return results;
    }

    // Posts this rank's data, waits for all ranks, hands the slots to read, then waits until every rank has read.
    private void Exchange(int rank, float[] data, Action<float[]?[]> read)
    {
        _slots[rank] = data;
        Wait();
        read(_slots);
        Wait();
        _slots[rank] = null;
    }

    private void Wait()
    {
        try
        {
            _barrier.SignalAndWait(_failed.Token);
        }
        catch (OperationCanceledException)
        {
            throw new RankFailedException(_failedRank, _failure ?? "unknown error");
        }
    }

    public void Dispose()
    {
        _barrier.Dispose();
        _failed.Dispose();
    }

    private sealed class Comm(InProcessWorld world, int rank) : ICommunicator
    {
        private int _groupDepth;

        public int Rank => rank;
        public int WorldSize => world.WorldSize;

        public void AllReduce(Tensor buffer, ReduceOp op)
        {
            CommChecks.F32(buffer, "all_reduce");
            float[] result = null!;
            world.Exchange(rank, buffer.ToFloatArray(), slots => result = Reduce(slots, 0, (int)buffer.Length, op));
            buffer.CopyFrom(result);
        }

        public void ReduceScatter(Tensor input, Tensor output, ReduceOp op)
        {
            CommChecks.F32(input, "reduce_scatter");
            CommChecks.F32(output, "reduce_scatter");
            CommChecks.Sizes(input, output, WorldSize, "reduce_scatter");
            float[] result = null!;
            int n = (int)output.Length;
            world.Exchange(rank, input.ToFloatArray(), slots => result = Reduce(slots, rank * n, n, op));
            output.CopyFrom(result);
        }

        public void AllGather(Tensor input, Tensor output)
        {
            CommChecks.F32(input, "all_gather");
            CommChecks.F32(output, "all_gather");
            CommChecks.Sizes(output, input, WorldSize, "all_gather");
            var result = new float[output.Length];
            int n = (int)input.Length;
            world.Exchange(rank, input.ToFloatArray(), slots =>
            {
                for (int r = 0; r < slots.Length; r++) slots[r]!.CopyTo(result, r * n);
            });
            output.CopyFrom(result);
        }

        public void Broadcast(Tensor buffer, int root)
        {
            CommChecks.F32(buffer, "broadcast");
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(root, WorldSize);
            float[] result = null!;
            world.Exchange(rank, buffer.ToFloatArray(), slots => result = (float[])slots[root]!.Clone());
            buffer.CopyFrom(result);
        }

        public void GroupStart() => _groupDepth++;

        public void GroupEnd()
        {
            if (_groupDepth == 0) throw new InvalidOperationException("GroupEnd without GroupStart");
            _groupDepth--;
        }

        // Rank order, fp32: the same bits on every rank.
        private static float[] Reduce(float[]?[] slots, int offset, int count, ReduceOp op)
        {
            var acc = slots[0].AsSpan(offset, count).ToArray();
            for (int r = 1; r < slots.Length; r++)
                System.Numerics.Tensors.TensorPrimitives.Add(acc, slots[r].AsSpan(offset, count), acc);
            if (op == ReduceOp.Avg)
                for (int i = 0; i < acc.Length; i++) acc[i] /= slots.Length;
            return acc;
        }

        public void Dispose()
        {
        }
    }
}
