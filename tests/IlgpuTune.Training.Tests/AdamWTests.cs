using IlgpuTune.Core;
using IlgpuTune.Kernels;
using IlgpuTune.Numerics;
using IlgpuTune.TestKit;

namespace IlgpuTune.Training.Tests;

[Collection(DevicesCollection.Name)]
public class AdamWTests(Devices devices)
{
    private static readonly int[][] Shapes = [[3, 5], [7], [2, 2, 3], [1]];

    private static Tensor[] Params(Device d, int seed) =>
        Shapes.Select((s, i) => Tensor.FromArray(d, Rand.Floats(seed + i, (int)Tensor.ShapeLength(s)), s).Named($"layer{i}.weight")).ToArray();

    private static float[] GradFor(int step, int i, int n) => Rand.Floats(1000 * step + i, n, 0.5f);

    // Step t gives every parameter a grad except parameter 1 at t = 2 (torch skips it and does not advance its step).
    private static void SetGrads(Tensor[] ps, int t)
    {
        for (int i = 0; i < ps.Length; i++)
        {
            ps[i].Grad?.Dispose();
            ps[i].Grad = t == 2 && i == 1 ? null : Tensor.FromArray(ps[i].Device, GradFor(t, i, (int)ps[i].Length), ps[i].Shape);
        }
    }

    [Theory]
    [InlineData("cpu", false)]
    [InlineData("ilgpu-cpu", false)]
    [InlineData("ilgpu-cpu", true)]
    public void Step_MatchesTheReference_SkippingParamsWithoutGrad(string kind, bool paged)
    {
        var d = devices.Get(kind);
        var ps = Params(d, 1);
        using var opt = new AdamW(ps, lr: 0.01, weightDecay: 0.1, pagedState: paged);
        Assert.Equal(paged && kind != "cpu", opt.IsPaged);
        var refP = Shapes.Select((s, i) => Rand.Floats(1 + i, (int)Tensor.ShapeLength(s))).ToArray();
        var refM = refP.Select(p => new float[p.Length]).ToArray();
        var refV = refP.Select(p => new float[p.Length]).ToArray();
        var refSteps = new long[ps.Length];
        double[] lrs = [0.01, 0.005, 0.02];
        for (int t = 1; t <= 3; t++)
        {
            SetGrads(ps, t);
            opt.Lr = lrs[t - 1];
            opt.Step();
            for (int i = 0; i < ps.Length; i++)
            {
                if (t == 2 && i == 1) continue;
                refSteps[i]++;
                Kernels.AdamW.StepCpu<float>(GradFor(t, i, refP[i].Length), new AdamWStep(lrs[t - 1], 0.9, 0.999, 1e-8, 0.1, refSteps[i]),
                    refP[i], refM[i], refV[i]);
            }
        }
        Assert.Equal([3L, 2L, 3L, 3L], Enumerable.Range(0, ps.Length).Select(opt.StepOf));
        var state = opt.ExportState().ToDictionary(kv => kv.Key, kv => kv.Value);
        for (int i = 0; i < ps.Length; i++)
        {
            Close.Assert($"param {i}", refP[i], ps[i].ToFloatArray(), 1e-7, 1e-6);
            Close.Assert($"exp_avg {i}", refM[i], state[$"layer{i}.weight.exp_avg"], 1e-8, 1e-6);
            Close.Assert($"exp_avg_sq {i}", refV[i], state[$"layer{i}.weight.exp_avg_sq"], 1e-10, 1e-6);
            Assert.Equal(refSteps[i], state[$"layer{i}.weight.step"][0]);
        }
        opt.ZeroGrad();
        Assert.All(ps, p => Assert.Null(p.Grad));
        foreach (var p in ps) p.Dispose();
    }

    // Chunks of 1, 4 and 13 elements split parameters across chunks, cycle the three staging slots many times and, at t = 3,
    // mix two step groups; the paged state must give bitwise what the device-resident state gives.
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(13)]
    public void Paged_ManyChunks_BitwiseEqualToDeviceState(long chunkElements)
    {
        var d = devices.Get("ilgpu-cpu");
        var a = Params(d, 3);
        var b = Params(d, 3);
        using var resident = new AdamW(a, lr: 0.01, weightDecay: 0.1);
        using var paged = new AdamW(b, 0.01, 0.9, 0.999, 1e-8, 0.1, pagedState: true, chunkElements);
        Assert.True(paged.IsPaged);
        for (int t = 1; t <= 3; t++)
        {
            SetGrads(a, t); resident.Step();
            SetGrads(b, t); paged.Step();
        }
        var sa = resident.ExportState();
        var sb = paged.ExportState();
        Assert.Equal(sa.Select(kv => kv.Key), sb.Select(kv => kv.Key));
        for (int i = 0; i < sa.Count; i++) Assert.Equal(sa[i].Value, sb[i].Value);
        for (int i = 0; i < a.Length; i++) Assert.Equal(a[i].ToFloatArray(), b[i].ToFloatArray());
        foreach (var p in a.Concat(b)) p.Dispose();
    }

    // The paged step runs beside the next launches: it keeps each gradient alive until a launch reading that parameter (or
    // Settle) has been ordered behind its update, and reading the parameters between steps, as a forward pass does, changes
    // nothing in the numbers.
    [Fact]
    public void Paged_HoldsEachGradientUntilItsParameterIsRead()
    {
        var d = devices.Get("ilgpu-cpu");
        var a = Params(d, 5);
        var b = Params(d, 5);
        using var resident = new AdamW(a, lr: 0.01, weightDecay: 0.1);
        using var paged = new AdamW(b, 0.01, 0.9, 0.999, 1e-8, 0.1, pagedState: true, 4);
        for (int t = 1; t <= 3; t++)
        {
            SetGrads(a, t); resident.Step(); resident.ZeroGrad();
            long withoutGrads = d.Allocator.AllocatedBytes;
            SetGrads(b, t);
            long before = d.Allocator.AllocatedBytes;
            paged.Step();
            paged.ZeroGrad();
            Assert.Equal(before, d.Allocator.AllocatedBytes); // every gradient still held by the step
            Assert.Equal(a[0].ToFloatArray(), b[0].ToFloatArray()); // a read: ordered behind parameter 0's update
            Assert.True(d.Allocator.AllocatedBytes < before, "parameter 0's gradient released");
            paged.Settle();
            Assert.Equal(withoutGrads, d.Allocator.AllocatedBytes);
            for (int i = 1; i < a.Length; i++) Assert.Equal(a[i].ToFloatArray(), b[i].ToFloatArray());
        }
        var sa = resident.ExportState();
        var sb = paged.ExportState();
        for (int i = 0; i < sa.Count; i++) Assert.Equal(sa[i].Value, sb[i].Value);
        foreach (var p in a.Concat(b)) p.Dispose();
    }

    [Theory]
    [InlineData("cpu", false, "cpu", false)]
    [InlineData("ilgpu-cpu", true, "ilgpu-cpu", false)]
    [InlineData("ilgpu-cpu", false, "cpu", false)]
    public void ExportThenLoadState_ContinuesExactlyAsWithoutInterruption(string fromKind, bool fromPaged, string toKind, bool toPaged)
    {
        var a = Params(devices.Get(fromKind), 5);
        var b = Params(devices.Get(toKind), 5);
        using var optA = new AdamW(a, pagedState: fromPaged);
        for (int t = 1; t <= 2; t++) { SetGrads(a, t); optA.Step(); }
        using var optB = new AdamW(b, pagedState: toPaged);
        optB.LoadState(optA.ExportState().ToDictionary(kv => kv.Key, kv => kv.Value));
        for (int i = 0; i < a.Length; i++) b[i].CopyFrom(a[i].ToFloatArray());
        for (int t = 3; t <= 4; t++)
        {
            SetGrads(a, t); optA.Step();
            SetGrads(b, t); optB.Step();
        }
        var sa = optA.ExportState();
        var sb = optB.ExportState();
        Assert.Equal(sa.Select(kv => kv.Key), sb.Select(kv => kv.Key));
        for (int i = 0; i < sa.Count; i++) Close.Assert(sa[i].Key, sa[i].Value, sb[i].Value, 0, fromKind == toKind ? 0 : 1e-6);
        for (int i = 0; i < a.Length; i++) Close.Assert(a[i].Name!, a[i].ToFloatArray(), b[i].ToFloatArray(), 0, fromKind == toKind ? 0 : 1e-6);
        foreach (var p in a.Concat(b)) p.Dispose();
    }

    [Fact]
    public void LoadState_RejectsMissingExtraAndMisSizedKeys()
    {
        var ps = Params(devices.Get("cpu"), 9);
        using var opt = new AdamW(ps);
        var good = opt.ExportState().ToDictionary(kv => kv.Key, kv => kv.Value);
        var missing = new Dictionary<string, float[]>(good);
        missing.Remove("layer2.weight.exp_avg_sq");
        Assert.Contains("layer2.weight.exp_avg_sq", Assert.Throws<ArgumentException>(() => opt.LoadState(missing)).Message);
        var extra = new Dictionary<string, float[]>(good) { ["layer9.weight.exp_avg"] = [1f] };
        Assert.Contains("layer9.weight.exp_avg", Assert.Throws<ArgumentException>(() => opt.LoadState(extra)).Message);
        var sized = new Dictionary<string, float[]>(good) { ["layer1.weight.exp_avg"] = new float[3] };
        Assert.Contains("layer1.weight.exp_avg", Assert.Throws<ArgumentException>(() => opt.LoadState(sized)).Message);
        foreach (var p in ps) p.Dispose();
    }

    [Fact]
    public void Constructor_RequiresUniqueNamesAndF32()
    {
        using var d = Device.Create("cpu");
        using var a = Tensor.Zeros(d, DType.F32, 2).Named("w");
        using var b = Tensor.Zeros(d, DType.F32, 2).Named("w");
        using var c = Tensor.Zeros(d, DType.BF16, 2).Named("c");
        using var u = Tensor.Zeros(d, DType.F32, 2);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => new AdamW([a, b])).Message);
        Assert.Contains("F32", Assert.Throws<ArgumentException>(() => new AdamW([c])).Message);
        Assert.Contains("Name", Assert.Throws<ArgumentException>(() => new AdamW([u])).Message);
    }

    // The moments (or the paged staging ring) live outside the tensor cache; the allocator's peak must still count them.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DeviceState_IsCountedInTheAllocatorsPeak(bool paged)
    {
        var d = devices.Get("ilgpu-cpu");
        var ps = Params(d, 11);
        try
        {
            long before = d.Allocator.AllocatedBytes;
            long total = ps.Sum(p => p.Length);
            using (new AdamW(ps, 0.01, 0.9, 0.999, 1e-8, 0.0, pagedState: paged, 4))
                Assert.Equal(paged ? 3 * 2 * 4 * sizeof(float) : 2 * total * sizeof(float), d.Allocator.AllocatedBytes - before);
            Assert.Equal(before, d.Allocator.AllocatedBytes);
        }
        finally
        {
            foreach (var p in ps) p.Dispose();
        }
    }
}
