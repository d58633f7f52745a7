// A frozen input embedding kept in host memory (offload_embeddings): only the rows of a batch's tokens are needed on the
// device, so the table (Llama-2-7B 0.24 GiB, Llama-3-8B 0.98 GiB in bf16) stays a host tensor (the mapped file's bytes
// where they are its dtype) and each lookup uploads the batch's distinct rows in that dtype.
using System.Buffers;
using System.Runtime.InteropServices;
using IlgpuTune.Core;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed partial class CausalLM
{
    // The managed CPU device the embedding table lives on when it is offloaded (owned: disposed after the table); else null.
    private readonly Device? _embeddingHost;

    /// <summary>The input embedding is a frozen table in host memory (<see cref="EmbedTokens"/> lives on a managed CPU
    /// device); lookups upload the batch's rows.</summary>
    public bool EmbeddingOnHost => _embeddingHost is not null;

    /// <summary>Largest table a host tensor can hold (a span of bytes: about 2 GiB).</summary>
    public static long MaxHostTableBytes => Array.MaxLength;

    // ids[tokens] -> h[tokens, hidden] fp32 from the host table: the distinct rows gathered on the host, uploaded in the table's
    // dtype [rows, hidden] and widened by the same embedding kernel over ids renumbered to those rows, so h is bitwise what
    // the lookup in a device table gives.
    private Tensor HostLookup(int[] hostIds)
    {
        var table = EmbedTokens;
        int width = table.Dim(1), rowBytes = width * table.DType.Size();
        var rowOf = new Dictionary<int, int>();
        var local = new int[hostIds.Length];
        for (int t = 0; t < hostIds.Length; t++)
        {
            if (!rowOf.TryGetValue(hostIds[t], out int row))
            {
                row = rowOf.Count;
                rowOf.Add(hostIds[t], row);
            }
            local[t] = row;
        }
        ReadOnlySpan<byte> source = table.DType == DType.F32 ? MemoryMarshal.AsBytes(table.Span<float>()) : MemoryMarshal.AsBytes(table.Span<ushort>());
        int bytes = rowOf.Count * rowBytes;
        var rows = ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            foreach (var (id, row) in rowOf)
                source.Slice(id * rowBytes, rowBytes).CopyTo(rows.AsSpan(row * rowBytes, rowBytes));
            using var gathered = Tensor.FromBytes(Device, table.DType, rows.AsSpan(0, bytes), rowOf.Count, width);
            using var ids = Tensor.FromArray(Device, local, local.Length);
            return Ops.Embedding(ids, gathered);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rows);
        }
    }

    // The embedding table [vocab, hidden] on the host in the dtype a device table would have: the stored bytes viewed where
    // they are that dtype (no copy), else the weights encoded to it.
    private static Tensor HostTable(Device host, DType dtype, string name, int[] shape, Func<string, float[]> read,
        Func<string, int[], Tensor?>? readOnHost)
    {
        long bytes = Tensor.ShapeLength(shape) * dtype.Size();
        if (bytes > MaxHostTableBytes)
            throw new ArgumentException($"{name}: a {dtype} table of {bytes / (double)(1L << 30):F2} GiB is more than a host tensor holds " +
                $"({MaxHostTableBytes / (double)(1L << 30):F0} GiB)");
        if (readOnHost?.Invoke(name, shape) is { } view)
        {
            if (view.DType == dtype) return view;
            view.Dispose();
        }
        var data = read(name);
        var encoded = new byte[bytes];
        if (dtype == DType.F32) MemoryMarshal.AsBytes(data.AsSpan()).CopyTo(encoded);
        else IO.SafetensorsWriter.Encode(data, dtype, encoded);
        return Tensor.Adopt(host, dtype, encoded, shape);
    }
}
