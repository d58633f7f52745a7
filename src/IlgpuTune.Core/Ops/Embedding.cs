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
        int vocab = table.Dim(0), hidden = table.Dim(1);
        var y = EmptyF32(ids.Device, [.. ids.Shape, hidden]);
        if (table.DType is DType.BF16 or DType.F16)
        {
            if (table.RequiresGrad) throw new ArgumentException($"{op}: table {table.Name} is {table.DType}; a 16-bit table must be frozen");
            B(ids).EmbeddingForward(ids, table, y);
            return y;
        }
        RequireF32(op, table, "table");
        B(ids).EmbeddingForward(ids, table, y);

        if (Tape.IsRecording(table))
        {
            var sIds = ids.Alias();
            Tape.Record(op, [ids, table], [y], ctx =>
            {
                var dY = ctx.GradOutput()!;
                var dTable = Tensor.Zeros(dY.Device, DType.F32, vocab, hidden);
                B(dY).EmbeddingBackward(dY, sIds, dTable);
                ctx.AddGrad(1, dTable);
            }, sIds);
        }
        return y;
    }
}
