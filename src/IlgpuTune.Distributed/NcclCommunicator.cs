// ICommunicator over NCCL: one communicator per process and GPU, made from the unique id rank 0 handed out over the
// rendezvous, bound to the device of the first tensor it is given (the trainer makes its device after the launcher made
// this). Every operation is enqueued on the device's default stream (the stream our kernels run on), so it is
// ordered after the kernels that wrote its input and before those that read its output, without a host wait.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuTune.Core;
using Device = IlgpuTune.Core.Device;

namespace IlgpuTune.Distributed;

public sealed class NcclCommunicator : ICommunicator
{
    private readonly NcclUniqueId _id;
    private Device? _device;
    private nint _stream;
    private nint _comm;

    public NcclCommunicator(NcclUniqueId id, int rank, int worldSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, worldSize);
        NcclLibrary.EnsureLoaded();
        (_id, Rank, WorldSize) = (id, rank, worldSize);
    }

    private void Connect(Device device)
    {
        if (device.Accelerator is not CudaAccelerator cuda)
            throw new InvalidOperationException($"NCCL runs on CUDA GPUs; this process's device is {device} (training on several GPUs needs one NVIDIA GPU per rank)");
        cuda.Bind(); // NCCL takes the calling thread's current CUDA context
        Nccl.Check(NcclNative.ncclCommInitRank(out _comm, WorldSize, _id, Rank), $"ncclCommInitRank (rank {Rank} of {WorldSize})");
        _stream = ((CudaStream)cuda.DefaultStream).StreamPtr;
        _device = device;
    }

    public int Rank { get; }
    public int WorldSize { get; }

    public void AllReduce(Tensor buffer, ReduceOp op)
    {
        CommChecks.F32(buffer, "all_reduce");
        nint p = Pointer(buffer);
        Nccl.Check(NcclNative.ncclAllReduce(p, p, (nuint)buffer.Length, NcclDataType.Float32, Op(op), _comm, _stream), "ncclAllReduce", _comm);
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op)
    {
        CommChecks.F32(input, "reduce_scatter");
        CommChecks.F32(output, "reduce_scatter");
        CommChecks.Sizes(input, output, WorldSize, "reduce_scatter");
        Nccl.Check(NcclNative.ncclReduceScatter(Pointer(input), Pointer(output), (nuint)output.Length, NcclDataType.Float32, Op(op), _comm, _stream),
            "ncclReduceScatter", _comm);
    }

    public void AllGather(Tensor input, Tensor output)
    {
        CommChecks.F32(input, "all_gather");
        CommChecks.F32(output, "all_gather");
        CommChecks.Sizes(output, input, WorldSize, "all_gather");
        Nccl.Check(NcclNative.ncclAllGather(Pointer(input), Pointer(output), (nuint)input.Length, NcclDataType.Float32, _comm, _stream), "ncclAllGather", _comm);
    }

    public void Broadcast(Tensor buffer, int root)
    {
        CommChecks.F32(buffer, "broadcast");
        nint p = Pointer(buffer);
        Nccl.Check(NcclNative.ncclBroadcast(p, p, (nuint)buffer.Length, NcclDataType.Float32, root, _comm, _stream), "ncclBroadcast", _comm);
    }

    public void GroupStart() => Nccl.Check(NcclNative.ncclGroupStart(), "ncclGroupStart");

    public void GroupEnd() => Nccl.Check(NcclNative.ncclGroupEnd(), "ncclGroupEnd");

    /// <summary>NCCL's ops (Avg needs NCCL 2.10+, which every CUDA 12 wheel has).</summary>
    public static NcclRedOp Op(ReduceOp op) => op switch
    {
        ReduceOp.Sum => NcclRedOp.Sum,
        ReduceOp.Avg => NcclRedOp.Avg,
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, null),
    };

    private nint Pointer(Tensor t)
    {
        if (_device is null) Connect(t.Device);
        if (!ReferenceEquals(t.Device, _device)) throw new ArgumentException($"tensor {t.Name} lives on another device than this communicator's");
        return t.Length == 0 ? 0 : t.View<float>().LoadEffectiveAddressAsPtr();
    }

    public void Dispose()
    {
        if (_comm == 0) return;
        NcclNative.ncclCommDestroy(_comm);
        _comm = 0;
    }

    /// <summary>Drops the communicator without waiting for peers (after a failure elsewhere they may be gone).</summary>
    public void Abort()
    {
        if (_comm == 0) return;
        NcclNative.ncclCommAbort(_comm);
        _comm = 0;
    }
}
