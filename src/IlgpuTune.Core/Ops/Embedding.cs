using IlgpuTune.Kernels;
using IlgpuTune.Numerics;

namespace IlgpuTune.Core;

public static partial class Ops
{
    /// <summary>ids[...] (I32) , table[vocab, hidden] -> y[..., hidden] fp32; dTable[ids[t]] += dY[t]. A BF16/F16 table
    /// must be frozen (a LoRA base).</summary>
    public static Tensor Embedding(Tensor ids, Tensor table)
    {
        const string op = "embedding";
        if (ids.DType != DType.I32) throw new ArgumentException($"{op}: ids must be I32, are {ids.DType}");
        RequireSameDevice(op, ids, table);
        int vocab = table.Dim(0), hidden = table.Dim(1), tokens = (int)ids.Length;
        var y = EmptyF32(ids.Device, [.. ids.Shape, hidden]);
        if (table.DType is DType.BF16 or DType.F16)
        {
            if (table.RequiresGrad) throw new ArgumentException($"{op}: table {table.Name} is {table.DType}; a 16-bit table must be frozen");
            var half = table.DType == DType.BF16 ? HalfType.BFloat16 : HalfType.Float16;
            if (ids.Device.IsCpu) Kernels.Embedding.ForwardHalfCpu(ids.I32, table.Span<ushort>(), half, hidden, y.F32);
            else Kernels.Embedding.ForwardHalf(K(ids), ids.I32View, table.View<ushort>(), half, tokens, hidden, y.F32View);
            return y;
        }
        RequireF32(op, table, "table");
        if (ids.Device.IsCpu) Kernels.Embedding.ForwardCpu<float>(ids.I32, table.F32, hidden, y.F32);
        else Kernels.Embedding.Forward(K(ids), ids.I32View, table.F32View, tokens, hidden, y.F32View);

        if (Tape.IsRecording(table))
        {
            var sIds = ids.Alias();
            Tape.Record(op, [ids, table], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dTable = Tensor.Zeros(dY.Device, DType.F32, vocab, hidden);
                if (dY.Device.IsCpu) Kernels.Embedding.BackwardCpu<float>(dY.F32, sIds.I32, hidden, dTable.F32);
                else Kernels.Embedding.Backward(K(dY), dY.F32View, sIds.I32View, tokens, hidden, vocab, dTable.F32View);
                ctx.AddGrad(1, dTable);
            }, sIds);
        }
        return y;
    }
}
