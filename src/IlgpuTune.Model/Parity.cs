// Parity with transformers: runs the fixture cases written by tools/golden/make_tiny_models.py (weights, inputs, and the
// logits, loss and gradients transformers/PEFT computed) on a device and reports, per tensor, max |ours − theirs| relative
// to max |theirs|. Limits (issue 2): 1e-4 for logits and loss, 1e-3 for gradients.
using IlgpuTune.Core;
using IlgpuTune.IO;
using IlgpuTune.Numerics;

namespace IlgpuTune.Model;

public sealed record ParityRow(string Case, string Tensor, double MaxAbs, double MaxRef, double Limit)
{
    public double Relative => MaxAbs / Math.Max(MaxRef, 1e-30);
    public bool Pass => Relative <= Limit;
}

public static class Parity
{
    public const double OutputLimit = 1e-4;
    public const double GradLimit = 1e-3;
    /// <summary>Limits with bf16 tensor-core matmuls (inputs rounded to 8 mantissa bits) against fp32 transformers. The
    /// gradient limit covers bf16 attention too, which rounds q, k, v, dO, P and dS as torch's bf16 SDPA does (worst
    /// seen on the H100: 5.4e-2 on a q_proj weight grad of full fine-tuning, 3.7e-2 with fp32 attention).</summary>
    public const double Bf16OutputLimit = 3e-2;
    public const double Bf16GradLimit = 8e-2;

    /// <summary>Runs every case of one fixture folder (config.json, model.safetensors, golden.safetensors, adapter/).</summary>
    public static List<ParityRow> Run(string fixtureDir, Device device)
    {
        bool bf16 = device.Precision.Matmul == DType.BF16;
        double outputLimit = bf16 ? Bf16OutputLimit : OutputLimit, gradLimit = bf16 ? Bf16GradLimit : GradLimit;
        string arch = Path.GetFileName(Path.TrimEndingDirectorySeparator(fixtureDir));
        using var golden = SafetensorsFile.Open(Path.Combine(fixtureDir, "golden.safetensors"));
        var rows = new List<ParityRow>();
        var shape = golden.Get("input_ids").Shape;
        int batch = (int)shape[0], seq = (int)shape[1];
        var ids = golden.ReadInt32("input_ids");
        var labels = golden.ReadInt32("labels");

        using (var model = ModelLoader.Load(fixtureDir, device))
        {
            model.SetFullFineTuning();
            RunCase(rows, $"{arch}/full", model, golden, ids, labels, batch, seq, null, null, "logits", "loss", "aux_loss",
                model.Parameters.Select(p => (p.Key, p.Value, "grad." + p.Key)), outputLimit, gradLimit);
        }

        string adapterDir = Path.Combine(fixtureDir, "adapter");
        if (Directory.Exists(adapterDir))
        {
            using var model = ModelLoader.Load(fixtureDir, device);
            var modules = PeftAdapter.Load(adapterDir, model);
            var lora = modules.SelectMany(m => new[] { m.LoraA!, m.LoraB! }).Select(t => (t.Name!, t, "lora_grad." + t.Name));
            RunCase(rows, $"{arch}/lora", model, golden, ids, labels, batch, seq, null, null, "lora_logits", "lora_loss", "lora_aux_loss", lora,
                outputLimit, gradLimit);
        }

        if (golden.Contains("packed_input_ids"))
        {
            using var model = ModelLoader.Load(fixtureDir, device);
            var pShape = golden.Get("packed_input_ids").Shape;
            var positions = golden.ReadInt32("packed_position_ids");
            RunCase(rows, $"{arch}/packed", model, golden, golden.ReadInt32("packed_input_ids"), golden.ReadInt32("packed_labels"),
                (int)pShape[0], (int)pShape[1], positions, SegmentsFromPositions(positions), "packed_logits", "packed_loss", null, [],
                outputLimit, gradLimit);
        }
        return rows;
    }

    /// <summary>
    /// QLoRA parity (tools/golden/make_qlora_golden.py): the model folder loaded with NF4 quantization, its 4-bit bytes and
    /// double-quant statistics against the golden's (exact: a row counts differing bytes, limit 0), then the adapter attached
    /// and logits, loss and LoRA grads against transformers + PEFT on the dequantized weights.
    /// </summary>
    public static List<ParityRow> RunQLora(string modelDir, string adapterDir, string goldenFile, Device device)
    {
        bool bf16 = device.Precision.Matmul == DType.BF16;
        double outputLimit = bf16 ? Bf16OutputLimit : OutputLimit, gradLimit = bf16 ? Bf16GradLimit : GradLimit;
        using var golden = SafetensorsFile.Open(goldenFile);
        var rows = new List<ParityRow>();
        using var model = ModelLoader.Load(modelDir, device, quantization: Numerics.QuantType.Nf4);
        foreach (var (name, q) in model.QuantizedWeights)
        {
            // The engine's offset is the float64 mean (torch's fp32 mean can differ in the last bit): compare with those stats.
            foreach (var (key, ours) in new[] { ("packed", q.Packed), ("qabsmax_f64", q.QAbsmax!), ("absmax2_f64", q.Absmax2!), ("offset_f64", q.Offset!) })
            {
                string k = $"q.{name}.{key}";
                if (!golden.Contains(k)) throw new InvalidDataException($"{goldenFile}: missing '{k}'");
                var want = golden.GetBytes(k).ToArray();
                var got = ours.ToBytes();
                int diff = want.Length == got.Length ? want.Zip(got).Count(p => p.First != p.Second) : Math.Max(want.Length, got.Length);
                rows.Add(new ParityRow("qlora/nf4", k + " (bytes)", diff, want.Length, 0));
            }
        }
        var modules = PeftAdapter.Load(adapterDir, model);
        var lora = modules.SelectMany(m => new[] { m.LoraA!, m.LoraB! }).Select(t => (t.Name!, t, "lora_grad." + t.Name));
        var shape = golden.Get("input_ids").Shape;
        RunCase(rows, "qlora/lora", model, golden, golden.ReadInt32("input_ids"), golden.ReadInt32("labels"), (int)shape[0], (int)shape[1],
            null, null, "logits", "loss", "aux_loss", lora, outputLimit, gradLimit);
        return rows;
    }

    /// <summary>Packed rows restart position ids at 0 for each sample; a new segment starts there.</summary>
    public static int[] SegmentsFromPositions(int[] positions)
    {
        var seg = new int[positions.Length];
        for (int i = 1; i < positions.Length; i++) seg[i] = positions[i] == 0 ? seg[i - 1] + 1 : seg[i - 1];
        return seg;
    }

    private static void RunCase(List<ParityRow> rows, string name, CausalLM model, SafetensorsFile golden, int[] ids, int[] labels,
        int batch, int seq, int[]? positions, int[]? segments, string logitsKey, string lossKey, string? auxKey,
        IEnumerable<(string Key, Tensor Param, string GoldenKey)> grads, double outputLimit, double gradLimit)
    {
        using var tape = new Tape();
        var (logits, ce, aux) = model.ForwardWithLosses(ids, labels, batch, seq, positions, segments);
        // A sparse model's loss is transformers' (cross-entropy + coef × aux), its aux loss a row of its own; the packed
        // golden is the samples' cross-entropy alone.
        var loss = aux is null || auxKey is null ? ce : model.WithRouterAuxLoss(ce, aux);
        using (logits)
        using (ce)
        using (aux)
        using (loss == ce ? null : loss)
        {
            rows.Add(Compare(name, logitsKey, golden.ReadFloat32(logitsKey), logits.ToFloatArray(), outputLimit));
            rows.Add(Compare(name, lossKey, golden.ReadFloat32(lossKey), loss.ToFloatArray(), outputLimit));
            if (aux is not null && auxKey is not null && golden.Contains(auxKey))
                rows.Add(Compare(name, auxKey, golden.ReadFloat32(auxKey), aux.ToFloatArray(), outputLimit));
            var gradList = grads.ToList();
            if (gradList.Count == 0) return;
            tape.Backward(loss);
            foreach (var (key, param, goldenKey) in gradList)
            {
                if (!golden.Contains(goldenKey)) throw new InvalidDataException($"{golden.Path}: missing '{goldenKey}'");
                var ours = param.Grad?.ToFloatArray() ?? new float[param.Length];
                rows.Add(Compare(name, goldenKey, golden.ReadFloat32(goldenKey), ours, gradLimit));
            }
        }
        model.ZeroGrad();
    }

    private static ParityRow Compare(string name, string key, float[] expected, float[] actual, double limit)
    {
        if (expected.Length != actual.Length)
            throw new InvalidDataException($"{name}: '{key}' has {actual.Length} elements, golden has {expected.Length}");
        double maxAbs = 0, maxRef = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs((double)actual[i] - expected[i]);
            maxAbs = double.IsNaN(d) ? double.PositiveInfinity : Math.Max(maxAbs, d);
            maxRef = Math.Max(maxRef, Math.Abs((double)expected[i]));
        }
        return new ParityRow(name, key, maxAbs, maxRef, limit);
    }

    public static string Format(IEnumerable<ParityRow> rows)
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"{"case",-18} {"tensor",-64} {"max|ours-hf|",12} {"max|hf|",10} {"rel",10} {"limit",7}  ok");
        foreach (var r in rows)
            sb.AppendLine($"{r.Case,-18} {r.Tensor,-64} {r.MaxAbs,12:E2} {r.MaxRef,10:E2} {r.Relative,10:E2} {r.Limit,7:E0}  {(r.Pass ? "yes" : "NO")}");
        return sb.ToString();
    }
}
