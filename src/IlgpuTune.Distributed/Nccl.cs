// NCCL's C API (nccl.h, NCCL 2.x) through LibraryImport. The library name "nccl" is resolved at run time by
// NcclLibrary (NCCL_LIBRARY, LD_LIBRARY_PATH, the system path, a Python nvidia-nccl-cu12/13 wheel), so only a
// multi-GPU run ever loads libnccl.so.2. The enum values and the 128-byte unique id are nccl.h's.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace IlgpuTune.Distributed;

/// <summary>ncclResult_t.</summary>
public enum NcclResult
{
    Success = 0,
    UnhandledCudaError = 1,
    SystemError = 2,
    InternalError = 3,
    InvalidArgument = 4,
    InvalidUsage = 5,
    RemoteError = 6,
    InProgress = 7,
}

/// <summary>ncclDataType_t.</summary>
public enum NcclDataType
{
    Int8 = 0,
    Uint8 = 1,
    Int32 = 2,
    Uint32 = 3,
    Int64 = 4,
    Uint64 = 5,
    Float16 = 6,
    Float32 = 7,
    Float64 = 8,
    Bfloat16 = 9,
}

/// <summary>ncclRedOp_t (the built-in ones).</summary>
public enum NcclRedOp
{
    Sum = 0,
    Prod = 1,
    Max = 2,
    Min = 3,
    Avg = 4,
}

/// <summary>ncclUniqueId: NCCL_UNIQUE_ID_BYTES (128) opaque bytes that rank 0 makes and every rank passes to ncclCommInitRank.</summary>
[InlineArray(Bytes)]
public struct NcclUniqueId
{
    public const int Bytes = 128;
    private byte _first;

    public static NcclUniqueId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Bytes) throw new ArgumentException($"an NCCL unique id is {Bytes} bytes, got {bytes.Length}");
        var id = new NcclUniqueId();
        bytes.CopyTo(id);
        return id;
    }

    public readonly byte[] ToArray() => ((ReadOnlySpan<byte>)this).ToArray();
}

public sealed class NcclException(string message) : Exception(message);

internal static partial class NcclNative
{
    public const string Library = "nccl";

    [LibraryImport(Library)]
    public static partial NcclResult ncclGetVersion(out int version);

    [LibraryImport(Library)]
    public static partial NcclResult ncclGetUniqueId(out NcclUniqueId uniqueId);

    [LibraryImport(Library)]
    public static partial NcclResult ncclCommInitRank(out nint comm, int nranks, NcclUniqueId commId, int rank);

    [LibraryImport(Library)]
    public static partial NcclResult ncclCommDestroy(nint comm);

    [LibraryImport(Library)]
    public static partial NcclResult ncclCommAbort(nint comm);

    [LibraryImport(Library)]
    public static partial NcclResult ncclCommGetAsyncError(nint comm, out NcclResult asyncError);

    [LibraryImport(Library)]
    public static partial nint ncclGetErrorString(NcclResult result);

    [LibraryImport(Library)]
    public static partial nint ncclGetLastError(nint comm);

    [LibraryImport(Library)]
    public static partial NcclResult ncclAllReduce(nint sendbuff, nint recvbuff, nuint count, NcclDataType datatype, NcclRedOp op, nint comm, nint stream);

    [LibraryImport(Library)]
    public static partial NcclResult ncclReduceScatter(nint sendbuff, nint recvbuff, nuint recvcount, NcclDataType datatype, NcclRedOp op, nint comm, nint stream);

    [LibraryImport(Library)]
    public static partial NcclResult ncclAllGather(nint sendbuff, nint recvbuff, nuint sendcount, NcclDataType datatype, nint comm, nint stream);

    [LibraryImport(Library)]
    public static partial NcclResult ncclBroadcast(nint sendbuff, nint recvbuff, nuint count, NcclDataType datatype, int root, nint comm, nint stream);

    [LibraryImport(Library)]
    public static partial NcclResult ncclGroupStart();

    [LibraryImport(Library)]
    public static partial NcclResult ncclGroupEnd();
}

public static class Nccl
{
    /// <summary>NCCL's version as nccl.h encodes it (major * 10000 + minor * 100 + patch), e.g. 22304 for 2.23.4.</summary>
    public static int Version
    {
        get
        {
            NcclLibrary.EnsureLoaded();
            Check(NcclNative.ncclGetVersion(out int v), "ncclGetVersion");
            return v;
        }
    }

    public static string VersionText(int code) => code >= 10000 ? $"{code / 10000}.{code / 100 % 100}.{code % 100}" : $"{code / 1000}.{code / 100 % 10}.{code % 100}";

    /// <summary>A new unique id (rank 0 only; the others receive it over the rendezvous).</summary>
    public static NcclUniqueId NewUniqueId()
    {
        NcclLibrary.EnsureLoaded();
        Check(NcclNative.ncclGetUniqueId(out var id), "ncclGetUniqueId");
        return id;
    }

    internal static void Check(NcclResult result, string call, nint comm = 0)
    {
        if (result is NcclResult.Success or NcclResult.InProgress) return;
        string detail = "";
        try
        {
            detail = Marshal.PtrToStringUTF8(NcclNative.ncclGetErrorString(result)) ?? "";
            if (comm != 0 && Marshal.PtrToStringUTF8(NcclNative.ncclGetLastError(comm)) is { Length: > 0 } last) detail += $" ({last})";
        }
        catch (EntryPointNotFoundException)
        {
        }
        throw new NcclException($"{call} failed: {Describe(result)}{(detail.Length > 0 ? $": {detail}" : "")}");
    }

    /// <summary>What an ncclResult_t means, in the words of nccl.h's ncclGetErrorString.</summary>
    public static string Describe(NcclResult result) => result switch
    {
        NcclResult.Success => "no error",
        NcclResult.UnhandledCudaError => "unhandled cuda error",
        NcclResult.SystemError => "unhandled system error (a network or shared-memory problem; run with NCCL_DEBUG=INFO)",
        NcclResult.InternalError => "internal error",
        NcclResult.InvalidArgument => "invalid argument",
        NcclResult.InvalidUsage => "invalid usage",
        NcclResult.RemoteError => "remote process exited or there was a network error",
        NcclResult.InProgress => "NCCL operation in progress",
        _ => $"ncclResult {(int)result}",
    };
}
